package bmcsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// IPMI simulator tuning.
const (
	// ipmiStartTimeout bounds how long StartIPMI and Restart wait for
	// ipmi_sim to answer an authenticated "chassis power status".
	ipmiStartTimeout = 10 * time.Second
	// ipmiStopTimeout is how long Stop waits for ipmi_sim to exit after
	// closing its console before killing it.
	ipmiStopTimeout = 3 * time.Second
	// ipmiLogTail caps each log section returned by Log.
	ipmiLogTail = 32 << 10
	// ipmiHookWait bounds how long the end-of-test cleanup waits for hook
	// runs to finish.
	ipmiHookWait = 10 * time.Second
	// ipmiMCAddr is the IPMB address of the simulated BMC.
	ipmiMCAddr = "0x20"
)

// Files in an IPMISim's directory.
const (
	ipmiLanConf     = "lan.conf"
	ipmiEmuFile     = "bmc.emu"
	ipmiChassisProg = "chassis.sh"
	ipmiStateDir    = "state"
	ipmiSimLog      = "ipmi_sim.log"
	ipmiChassisLog  = "chassis.log"
	ipmiPowerFile   = "power"
	ipmiBootFile    = "boot"
	ipmiHookSeqFile = "hookseq" // number of the last hook run started; run N creates hook.N.done
)

// IPMIToolsHint is appended to the error IPMIAvailable returns.
const IPMIToolsHint = "run scripts/install-test-deps (Debian packages openipmi and ipmitool)"

// IPMIConfig configures a simulated IPMI BMC.
type IPMIConfig struct {
	// User and Password are the credentials of the only LAN user, which has
	// admin privilege. Both are required: User is 1 to 15 and Password 1 to
	// 19 printable ASCII characters other than space and '"' (ipmi_sim's
	// configuration parser cuts one character off the IPMI maximums of 16
	// and 20, and splits on spaces).
	User, Password string
	// PowerOn and PowerOff, when set, are shell commands the chassis
	// control program runs (via /bin/sh -c, in the background, in the
	// simulator's directory, with the test's environment) when the BMC
	// turns the simulated machine on or off. They run only on a change of
	// state: "power on" while on runs nothing. A power cycle runs PowerOff
	// then, a second later, PowerOn; a soft shutdown counts as power off.
	// Hook runs are serialized: a hook starts only after the previous one
	// has exited (or after 60s). Their exit status is ignored for the power
	// state bookkeeping; their output is appended to the chassis log (see
	// Log). Hooks must put long-running children (a VM) in the background
	// themselves and are not stopped by Stop or at the end of the test.
	PowerOn, PowerOff string
	// Reset, when set, is the shell command run for a hard reset ("chassis
	// power reset") while the power is on. When empty, a hard reset runs
	// PowerOff then PowerOn. The power state does not change.
	Reset string
	// InitialPower is the power state at start (false = off).
	InitialPower bool
	// Netns, when set, runs the simulator (and its hooks, and Ipmitool)
	// inside this network namespace, on its loopback: a BMC for a server
	// and a VM that live in a namespace the test made.
	Netns string
}

// IPMIBootOptions are the boot flags of the last accepted IPMI "Set System
// Boot Options" request for the boot flags parameter (what "ipmitool
// chassis bootdev DEV [options=...]" sends).
type IPMIBootOptions struct {
	// Device is the boot device selector as ipmitool names it: "none",
	// "pxe", "disk", "safe", "diag", "cdrom", "bios" or "floppy"; or
	// "0xN" for other selector values.
	Device string
	// Valid is the "boot flags valid" bit.
	Valid bool
	// Persistent is set when the override applies to all future boots
	// (options=persistent) rather than the next one only.
	Persistent bool
	// EFI is set when the BIOS boot type is EFI (options=efiboot) rather
	// than legacy.
	EFI bool
	// Data is the raw request data: parameter selector then the five
	// parameter bytes.
	Data []byte
}

// IPMISim is a running Debian openipmi ipmi_sim, an IPMI v1.5/v2.0 (RMCP+)
// over LAN BMC simulator, listening on a UDP port of 127.0.0.1 that is
// reserved for it from its start to the end of the test. Power and
// boot device are kept by a chassis control shell script in the
// simulator's directory, which is a per-test temporary directory. Clients
// must use "-I lanplus -C 3" (cipher suite 17 is not implemented by
// ipmi_sim). The methods are safe for concurrent use.
type IPMISim struct {
	// Addr is the address the BMC listens on, "127.0.0.1:PORT".
	Addr string
	// Host is the IP address the BMC listens on, "127.0.0.1".
	Host string
	// Port is the UDP port the BMC listens on.
	Port string
	// User and Password are the configured LAN credentials.
	User, Password string

	dir      string
	simPath  string
	toolPath string
	netns    string

	mu      sync.Mutex
	cmd     *exec.Cmd
	console *os.File      // write end of ipmi_sim's stdin; closing it makes ipmi_sim exit
	done    chan struct{} // closed when cmd has exited
}

// IPMIAvailable reports whether the ipmi_sim and ipmitool binaries are
// installed, returning an error that names the missing ones otherwise.
func IPMIAvailable() error {
	_, _, err := ipmiBinaries()
	return err
}

func ipmiBinaries() (sim, tool string, err error) {
	var missing []string
	sim, err1 := exec.LookPath("ipmi_sim")
	if err1 != nil {
		missing = append(missing, "ipmi_sim")
	}
	tool, err2 := exec.LookPath("ipmitool")
	if err2 != nil {
		missing = append(missing, "ipmitool")
	}
	if len(missing) > 0 {
		return "", "", fmt.Errorf("%s not found in PATH: %s", strings.Join(missing, " and "), IPMIToolsHint)
	}
	return sim, tool, nil
}

// StartIPMI starts ipmi_sim on a UDP port of 127.0.0.1 reserved for it until
// the end of the test (see reserveUDPPort), in a directory from t.TempDir,
// and waits (at most 10s) until it answers an authenticated
// "ipmitool chassis power status". It skips the test when ipmi_sim or
// ipmitool is not installed and fails it when the simulator does not come
// up. The simulator is stopped when the test finishes; it also exits by
// itself when the test process dies, since its console reads from a pipe
// the test process holds.
func StartIPMI(t testing.TB, cfg IPMIConfig) *IPMISim {
	t.Helper()
	simPath, toolPath, err := ipmiBinaries()
	if err != nil {
		t.Skipf("bmcsim: %v", err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("bmcsim: %v", err)
	}
	s := &IPMISim{
		Host:     "127.0.0.1",
		User:     cfg.User,
		Password: cfg.Password,
		dir:      t.TempDir(),
		simPath:  simPath,
		toolPath: toolPath,
		netns:    cfg.Netns,
	}
	if err := s.writeFiles(cfg); err != nil {
		t.Fatalf("bmcsim: %v", err)
	}
	port, err := reserveUDPPort(cfg.Netns)
	if err != nil {
		t.Fatalf("bmcsim: %v", err)
	}
	// The reservation lasts while ipmi_sim is stopped and restarted, so
	// no other test of the run can take the port in between. Registered
	// before the cleanup that stops ipmi_sim, so run after it.
	t.Cleanup(port.release)
	t.Cleanup(func() {
		s.Stop()
		// Let hook runs finish writing to the directory before the
		// testing package removes it.
		if err := s.WaitHooks(ipmiHookWait); err != nil {
			t.Logf("bmcsim: %v", err)
		}
	})
	if err := s.writeLanConf(port.port); err != nil {
		t.Fatalf("bmcsim: %v", err)
	}
	s.Port = strconv.Itoa(port.port)
	s.Addr = net.JoinHostPort(s.Host, s.Port)
	// No other port is tried when this one cannot be bound: a reserved
	// port is never taken by the run, so failing to bind it is a bug to
	// see, not a race to retry.
	if err := s.start(); err != nil {
		t.Fatalf("bmcsim: %v\n%s", err, s.Log())
	}
	return s
}

// Restart starts ipmi_sim again, stopping it first if it is running, on the
// same port and with the same configuration and state: power, boot device
// and ipmi_sim's persistent data (users, SEL) survive. The port stays
// reserved while ipmi_sim is down, and no :0 bind is ever given it, so
// nothing of the run can have taken it in between. It fails the test if
// the simulator does not come up.
func (s *IPMISim) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("bmcsim: restarting ipmi_sim: %v\n%s", err, s.Log())
	}
}

// Stop stops ipmi_sim: the BMC no longer answers, as if it were down. The
// power state and any machine started by a hook are left as they are. It
// is safe to call more than once.
func (s *IPMISim) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	// EOF on its console makes ipmi_sim exit cleanly.
	_ = s.console.Close()
	select {
	case <-s.done:
	case <-time.After(ipmiStopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.console, s.done = nil, nil, nil
}

// Running reports whether ipmi_sim is running.
func (s *IPMISim) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// WaitHooks waits until every hook run started so far has finished, or
// until timeout has passed. A hook run is the PowerOn, PowerOff or Reset
// commands triggered by one IPMI request.
func (s *IPMISim) WaitHooks(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		seq := s.readState(ipmiHookSeqFile)
		if seq == "" {
			return nil
		}
		if _, err := os.Stat(filepath.Join(s.dir, "hook."+seq+".done")); err == nil {
			// Runs finish in order, so all earlier ones are done too.
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hook run %s still running after %v", seq, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Dir returns the simulator's directory. It holds the configuration, the
// state files and the logs, and is the working directory of the hooks.
func (s *IPMISim) Dir() string { return s.dir }

// Power returns the simulated chassis power state, as kept by the chassis
// control program: true when on.
func (s *IPMISim) Power() (on bool) {
	return s.readState(ipmiPowerFile) == "1"
}

// BootDevice returns the boot device last set through IPMI (e.g. by
// "ipmitool chassis bootdev"), as ipmi_sim passed it to the chassis control
// program: "pxe", "disk", "cdrom", "bios" or "none"; "" if none was ever
// set. ipmi_sim rejects the other devices ipmitool knows (safe, diag,
// floppy). See BootOptions for the persistent and EFI flags.
func (s *IPMISim) BootDevice() string {
	d := s.readState(ipmiBootFile)
	if d == "default" { // ipmi_sim's name for "force boot from default hard drive"
		return "disk"
	}
	return d
}

// BootOptions returns the last accepted "Set System Boot Options" request
// for the boot flags, decoded from ipmi_sim's message trace, and whether
// there was one. Unlike BootDevice it includes the persistent and EFI
// flags, which ipmi_sim does not pass to the chassis control program.
func (s *IPMISim) BootOptions() (IPMIBootOptions, bool) {
	f, err := os.Open(filepath.Join(s.dir, ipmiSimLog))
	if err != nil {
		return IPMIBootOptions{}, false
	}
	defer f.Close()
	return ipmiLastBootFlags(f)
}

// Log returns the end of ipmi_sim's output (including its trace of every
// IPMI request and response) and of the chassis control log (every call
// from ipmi_sim and the output of the hooks), for failure messages.
func (s *IPMISim) Log() string {
	var b strings.Builder
	for _, name := range []string{ipmiSimLog, ipmiChassisLog} {
		p := filepath.Join(s.dir, name)
		fmt.Fprintf(&b, "--- %s ---\n", p)
		data, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
			continue
		}
		// ipmi_sim's console ends lines with "\n\r".
		data = bytes.ReplaceAll(data, []byte("\n\r"), []byte("\n"))
		if len(data) > ipmiLogTail {
			fmt.Fprintf(&b, "(%d bytes skipped)\n", len(data)-ipmiLogTail)
			data = data[len(data)-ipmiLogTail:]
		}
		b.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Ipmitool runs ipmitool against the simulator with its credentials over
// lanplus with cipher suite 3, one-second timeouts and two retries, and
// returns its combined output. The password is passed in the environment.
func (s *IPMISim) Ipmitool(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{
		"-I", "lanplus", "-H", s.Host, "-p", s.Port, "-U", s.User, "-E",
		"-C", "3", "-N", "1", "-R", "2",
	}, args...)
	cmd := exec.CommandContext(ctx, s.toolPath, argv...)
	if s.netns != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.netns, s.toolPath}, argv...)...)
	}
	cmd.Env = []string{"IPMITOOL_PASSWORD=" + s.Password}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (c IPMIConfig) validate() error {
	check := func(what, v string, maxLen int) error {
		if v == "" || len(v) > maxLen {
			return fmt.Errorf("IPMIConfig.%s must be 1 to %d characters long", what, maxLen)
		}
		for _, r := range v {
			if r <= ' ' || r > '~' || r == '"' {
				return fmt.Errorf("IPMIConfig.%s may only contain printable ASCII characters other than space and '\"'", what)
			}
		}
		return nil
	}
	if err := check("User", c.User, 15); err != nil {
		return err
	}
	return check("Password", c.Password, 19)
}

// ipmiShellQuote quotes s for POSIX sh.
func ipmiShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeFiles writes everything but lan.conf, which depends on the port.
func (s *IPMISim) writeFiles(cfg IPMIConfig) error {
	if strings.ContainsAny(s.dir, "\"'\n") {
		return fmt.Errorf("temporary directory %q contains a quote or newline", s.dir)
	}
	power := "0"
	if cfg.InitialPower {
		power = "1"
	}
	prog := fmt.Sprintf(ipmiChassisScript, ipmiShellQuote(s.dir),
		ipmiShellQuote(cfg.PowerOn), ipmiShellQuote(cfg.PowerOff), ipmiShellQuote(cfg.Reset))
	files := []struct {
		name string
		data string
		perm os.FileMode
	}{
		{ipmiEmuFile, ipmiEmu, 0o644},
		{ipmiChassisProg, prog, 0o755},
		{ipmiPowerFile, power + "\n", 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(s.dir, f.name), []byte(f.data), f.perm); err != nil {
			return fmt.Errorf("writing ipmi_sim file: %w", err)
		}
	}
	if err := os.Mkdir(filepath.Join(s.dir, ipmiStateDir), 0o700); err != nil {
		return fmt.Errorf("creating ipmi_sim state directory: %w", err)
	}
	return nil
}

func (s *IPMISim) writeLanConf(port int) error {
	conf := fmt.Sprintf(ipmiLanConfTemplate, port,
		filepath.Join(s.dir, ipmiChassisProg), ipmiMCAddr, s.User, s.Password)
	// The file holds the password: owner-only.
	if err := os.WriteFile(filepath.Join(s.dir, ipmiLanConf), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("writing ipmi_sim LAN configuration: %w", err)
	}
	return nil
}

// errIPMIBind is returned by start when ipmi_sim could not bind its port:
// something outside the run's tests took the reserved port.
var errIPMIBind = errors.New("ipmi_sim could not bind its UDP port")

// start runs ipmi_sim and waits until it answers.
func (s *IPMISim) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("ipmi_sim is already running")
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, ipmiSimLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening ipmi_sim log: %w", err)
	}
	defer logf.Close()
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("opening ipmi_sim log: %w", err)
	}
	fmt.Fprintf(logf, "=== %s bmcsim: starting ipmi_sim on %s\n", time.Now().Format(time.RFC3339Nano), s.Addr)

	// Without -n, ipmi_sim runs a command console on stdin/stdout, which is
	// where "debug msg" prints the message trace BootOptions decodes. The
	// console exits the simulator on EOF, so ipmi_sim cannot outlive the
	// test process holding the write end.
	stdin, console, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating ipmi_sim console pipe: %w", err)
	}
	args := []string{s.simPath,
		"-c", filepath.Join(s.dir, ipmiLanConf),
		"-f", filepath.Join(s.dir, ipmiEmuFile),
		"-s", filepath.Join(s.dir, ipmiStateDir)}
	if s.netns != "" {
		// ip netns exec replaces itself with ipmi_sim: the process is
		// the simulator.
		args = append([]string{"ip", "netns", "exec", s.netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = s.dir
	cmd.Stdin = stdin
	cmd.Stdout = logf
	cmd.Stderr = logf
	err = cmd.Start()
	_ = stdin.Close()
	if err != nil {
		_ = console.Close()
		return fmt.Errorf("starting ipmi_sim: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.console, s.done = cmd, console, done

	ctx, cancel := context.WithTimeout(context.Background(), ipmiStartTimeout)
	defer cancel()
	if err := s.waitReady(ctx, done); err != nil {
		_ = console.Close()
		select {
		case <-done:
		case <-time.After(ipmiStopTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
		s.cmd, s.console, s.done = nil, nil, nil
		if out, rerr := ipmiReadFrom(filepath.Join(s.dir, ipmiSimLog), logStart); rerr == nil &&
			strings.Contains(out, "Unable to bind to LAN port") {
			return fmt.Errorf("%w %s: %v", errIPMIBind, s.Addr, err)
		}
		return err
	}
	return nil
}

// waitReady waits until the simulator answers an RMCP presence ping, then
// until an authenticated "chassis power status" succeeds.
func (s *IPMISim) waitReady(ctx context.Context, exited <-chan struct{}) error {
	check := func() error {
		select {
		case <-exited:
			return errors.New("ipmi_sim exited during startup")
		default:
		}
		return ctx.Err()
	}
	// The presence ping is sent from this process, which is not in the
	// namespace: there ipmitool alone says when the simulator is up.
	if s.netns == "" {
		conn, err := net.Dial("udp4", s.Addr)
		if err != nil {
			return fmt.Errorf("pinging ipmi_sim: %w", err)
		}
		defer conn.Close()
		if err := waitPing(conn, check, s.Addr); err != nil {
			return err
		}
	}
	var toolErr error
	for {
		if err := check(); err != nil {
			return fmt.Errorf("waiting for ipmi_sim to answer ipmitool on %s: %w (last: %v)", s.Addr, err, toolErr)
		}
		var out string
		out, toolErr = s.Ipmitool(ctx, "chassis", "power", "status")
		if toolErr == nil {
			if strings.HasPrefix(out, "Chassis Power is ") {
				return nil
			}
			toolErr = fmt.Errorf("unexpected ipmitool output %q", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPing pings until the simulator answers or check fails.
func waitPing(conn net.Conn, check func() error, addr string) error {
	var pingErr error
	for {
		if err := check(); err != nil {
			return fmt.Errorf("waiting for ipmi_sim to answer a presence ping on %s: %w (last: %v)", addr, err, pingErr)
		}
		if pingErr = ipmiPing(conn); pingErr == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ipmiPing sends an RMCP/ASF presence ping on conn and waits up to 200ms for
// the pong.
func ipmiPing(conn net.Conn) error {
	// RMCP header: version 6, reserved, sequence 0xff (no ACK), class ASF.
	// ASF: IANA 4542, type presence ping (0x80), tag, reserved, length 0.
	ping := []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x42, 0x00, 0x00}
	if _, err := conn.Write(ping); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		return err
	}
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		// The pong is an ASF message of type 0x40 with our tag.
		if n >= 10 && buf[3] == 0x06 && buf[8] == 0x40 && buf[9] == 0x42 {
			return nil
		}
	}
}

func (s *IPMISim) readState(name string) string {
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ipmiReadFrom returns the contents of a file from offset off.
func ipmiReadFrom(path string, off int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return "", err
	}
	b, err := io.ReadAll(f)
	return string(b), err
}

// ipmiBootDevices names boot device selectors (IPMI v2.0 table 28-14, boot
// flags data 2, bits 5:2) as ipmitool's "chassis bootdev" does.
var ipmiBootDevices = map[byte]string{
	0x0: "none", 0x1: "pxe", 0x2: "disk", 0x3: "safe",
	0x4: "diag", 0x5: "cdrom", 0x6: "bios", 0xf: "floppy",
}

// ipmiLastBootFlags scans ipmi_sim's "debug msg" trace for Set System Boot
// Options (netfn 0x00, cmd 0x08) requests of parameter 5 (boot flags) that
// were answered with completion code 0, and decodes the last one. A traced
// request looks like
//
//	Receive message:
//	 channel=1 netfn=0x0 cmd=0x8 rs_addr=0x20 rs_lun=0x0 rq_addr=0x81
//	 rq_lun=0x0 rq_seq=0x8
//	 05 e0 04 00 00 00
//	Response message: 1795690672.550978
//	 00
func ipmiLastBootFlags(r io.Reader) (IPMIBootOptions, bool) {
	const (
		idle = iota
		header
		data
		response
	)
	var (
		last  IPMIBootOptions
		found bool
		state = idle
		req   []byte
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// The console ends lines with "\n\r".
		line := strings.Trim(sc.Text(), "\r")
		switch {
		case strings.HasSuffix(line, "Receive message:"): // may follow a "> " console prompt
			state, req = header, nil
		case state == header:
			state = idle
			if strings.Contains(line, " netfn=0x0 cmd=0x8 ") {
				state = data
			}
		case state == data && strings.HasPrefix(line, " rq_lun="):
			// Part of the header.
		case state == data && strings.HasPrefix(line, "Response message:"):
			state = response
		case state == data:
			b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(line), " ", ""))
			if err != nil {
				state = idle
				break
			}
			req = append(req, b...)
		case state == response:
			state = idle
			if strings.TrimSpace(line) != "00" || len(req) < 3 || req[0]&0x7f != 5 {
				break
			}
			sel := (req[2] >> 2) & 0xf
			dev, ok := ipmiBootDevices[sel]
			if !ok {
				dev = fmt.Sprintf("%#x", sel)
			}
			last = IPMIBootOptions{
				Device:     dev,
				Valid:      req[1]&0x80 != 0,
				Persistent: req[1]&0x40 != 0,
				EFI:        req[1]&0x20 != 0,
				Data:       req,
			}
			found = true
		}
	}
	return last, found
}

// ipmiEmu is the ipmi_sim command file: one BMC at IPMB 0x20 with a SEL,
// and a trace of all IPMI messages on the console (stdout).
const ipmiEmu = `# ipmi_sim emulation commands, written by bmcsim.StartIPMI.
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
debug msg
`

// ipmiLanConfTemplate is the ipmi_sim LAN configuration (see ipmi_lan(5)).
// Arguments: port, chassis control program, MC address, user, password.
// IPMI 1.5 sessions are limited to MD5 authentication so that a wrong
// password is always rejected.
const ipmiLanConfTemplate = `# ipmi_sim LAN configuration, written by bmcsim.StartIPMI.
name "bmcsim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "'%s' %s"
  user 2 true "%s" "%s" admin 10 md5
`

// ipmiChassisScript is the chassis control program. Arguments: directory,
// PowerOn, PowerOff and Reset commands, all shell-quoted.
//
// ipmi_sim runs it through popen (so /bin/sh -c) as
//
//	chassis.sh 0x20 get PARM...           print "PARM:VALUE" lines
//	chassis.sh 0x20 set PARM VALUE...     print nothing on success
//
// with PARM one of power (1/0), reset (1: pulse), boot (none, pxe, default,
// cdrom, bios), shutdown (1: soft off) and identify ("interval force"). A
// non-zero exit status makes ipmi_sim answer the IPMI request with an error;
// output of a failing call is logged by ipmi_sim.
const ipmiChassisScript = `#!/bin/sh
# Chassis control program for ipmi_sim, written by bmcsim.StartIPMI.
#   chassis.sh MC get PARM...        print PARM:VALUE lines
#   chassis.sh MC set PARM VALUE...  apply, print nothing on success
# State is kept in files next to this script.
dir=%s
power_on=%s
power_off=%s
reset=%s

log="$dir/chassis.log"
exec 2>>"$log"

note() {
	printf '%%s %%s\n' "$(date -u +%%H:%%M:%%S.%%N)" "$*" >>"$log"
}

# put NAME VALUE: replace a state file atomically.
put() {
	printf '%%s\n' "$2" >"$dir/$1.tmp" && mv -f "$dir/$1.tmp" "$dir/$1"
}

# state NAME DEFAULT: print a state file's value.
state() {
	v=$(cat "$dir/$1" 2>/dev/null)
	printf '%%s\n' "${v:-$2}"
}

# hooks NAME CMD [NAME CMD]...: run the non-empty commands one after the
# other in the background, once the hooks started by the previous call have
# finished (waiting at most 60s), with their output appended to the log.
# ipmi_sim leaks its descriptors (its UDP socket among them) into this
# program: close them so that a long-running hook such as a VM does not keep
# the BMC's port bound.
hooks() {
	any= n=0
	for h in "$@"; do
		n=$((n + 1))
		[ $((n %% 2)) -eq 1 ] || any=$any$h
	done
	[ -n "$any" ] || return 0
	seq=$(( $(state hookseq 0) + 1 ))
	put hookseq "$seq"
	(
		exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
		i=0
		while [ "$seq" -gt 1 ] && [ ! -e "$dir/hook.$((seq - 1)).done" ]; do
			if [ "$i" -ge 600 ]; then
				note "hook run $seq: previous hooks still running after 60s, not waiting"
				break
			fi
			sleep 0.1
			i=$((i + 1))
		done
		while [ $# -ge 2 ]; do
			if [ -n "$2" ]; then
				note "hook $1: starting"
				/bin/sh -c "$2"
				note "hook $1: exit status $?"
			fi
			shift 2
		done
		: >"$dir/hook.$seq.done"
	) </dev/null >>"$log" 2>&1 &
}

if [ $# -lt 2 ]; then
	echo "usage: $0 MC get|set PARM [VALUE]..."
	exit 1
fi
op=$2
shift 2
note "ipmi_sim: $op $*"

case $op in
get)
	for parm in "$@"; do
		case $parm in
		power) echo "power:$(state power 0)" ;;
		boot) echo "boot:$(state boot none)" ;;
		*)
			echo "unsupported parameter for get: $parm"
			exit 1
			;;
		esac
	done
	;;
set)
	while [ $# -ge 2 ]; do
		parm=$1
		val=$2
		shift 2
		case $parm in
		power)
			was=$(state power 0)
			case $val in
			1)
				put power 1
				[ "$was" = 1 ] || hooks power-on "$power_on"
				;;
			0)
				put power 0
				[ "$was" = 0 ] || hooks power-off "$power_off"
				;;
			*)
				echo "invalid power value: $val"
				exit 1
				;;
			esac
			;;
		reset)
			if [ "$(state power 0)" = 1 ]; then
				if [ -n "$reset" ]; then
					hooks reset "$reset"
				else
					hooks power-off "$power_off" power-on "$power_on"
				fi
			fi
			;;
		shutdown)
			if [ "$(state power 0)" = 1 ]; then
				put power 0
				hooks power-off "$power_off"
			fi
			;;
		boot) put boot "$val" ;;
		identify) put identify "$val" ;;
		*)
			echo "unsupported parameter for set: $parm"
			exit 1
			;;
		esac
	done
	if [ $# -ne 0 ]; then
		echo "no value for parameter $1"
		exit 1
	fi
	;;
*)
	# "check" (validate values without applying them) is not supported.
	echo "unsupported operation: $op"
	exit 1
	;;
esac
`
