package matchbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// WorkflowState is where a machine's reinstall stands.
type WorkflowState string

// The reinstall workflow's states (see docs/reinstall.md):
//
//	active|failed --reinstall--> requested --> bmc-prep --> booting
//	booting --install profile fetched with the token--> installing
//	installing --installer reports success--> installed
//	installed --installed system reports its first boot--> active
//	any state --timeout, retries spent, failure report, cancel--> failed
const (
	StateRequested  WorkflowState = "requested"
	StateBMCPrep    WorkflowState = "bmc-prep"
	StateBooting    WorkflowState = "booting"
	StateInstalling WorkflowState = "installing"
	StateInstalled  WorkflowState = "installed"
	StateActive     WorkflowState = "active"
	StateFailed     WorkflowState = "failed"
)

// Done reports whether the workflow has ended (active or failed).
func (s WorkflowState) Done() bool { return s == StateActive || s == StateFailed }

// Workflow is one machine's reinstall, persisted at every transition.
type Workflow struct {
	MAC   string        `json:"mac"`
	State WorkflowState `json:"state"`
	// Reason says why the workflow failed (or was canceled).
	Reason string `json:"reason,omitempty"`
	// Generation grows by one at every transition, across reinstalls of
	// the machine: each write is a compare-and-swap on it.
	Generation uint64 `json:"generation"`
	// Profile is the install profile the machine is given while booting
	// and installing.
	Profile string `json:"profile"`
	// EFI asks the BMC for a UEFI (rather than legacy) network boot.
	EFI bool `json:"efi"`
	// Token is the secret in the install profile's URLs; requests and
	// reports with another token are refused.
	Token string `json:"token,omitempty"`
	// Attempt counts the boots tried (power cycles through the BMC).
	Attempt int `json:"attempt"`
	// Batch groups the machines of one bulk request; BatchLimit is how
	// many of them may be in flight at once (0: no batch limit).
	Batch      string `json:"batch,omitempty"`
	BatchLimit int    `json:"batch_limit,omitempty"`
	// Requested is when the reinstall was asked for; Entered when the
	// current state began.
	Requested time.Time `json:"requested"`
	Entered   time.Time `json:"entered"`
	// Report is the installer's (or installed system's) last report.
	Report *InstallReport `json:"report,omitempty"`
	// History lists the states this reinstall went through, oldest first
	// (at most MaxWorkflowHistory).
	History []WorkflowStep `json:"history,omitempty"`
}

// WorkflowStep is one state a workflow entered.
type WorkflowStep struct {
	State  WorkflowState `json:"state"`
	Time   time.Time     `json:"time"`
	Reason string        `json:"reason,omitempty"`
}

// MaxWorkflowHistory bounds a workflow's history (a machine that keeps
// failing to boot retries a bounded number of times anyway).
const MaxWorkflowHistory = 32

// InstallReport is what an installer or a freshly installed system tells
// matchbox.
type InstallReport struct {
	Status ReportStatus `json:"status"`
	// ExitStatus is the installer's exit status, when it gave one.
	ExitStatus *int `json:"exit_status,omitempty"`
	// Log is the end of the installer's log (bounded).
	Log  string    `json:"log,omitempty"`
	Time time.Time `json:"time"`
}

// ReportStatus is what a report says.
type ReportStatus string

// Report statuses: the installer succeeded or failed; the installed
// system booted.
const (
	ReportInstalled ReportStatus = "installed"
	ReportFailed    ReportStatus = "failed"
	ReportBooted    ReportStatus = "booted"
)

// MaxReportLog bounds the installer log kept with a report.
const MaxReportLog = 4096

// ErrStaleToken is returned (wrapped) for a request or report whose token
// is not the machine's current reinstall token.
var ErrStaleToken = errors.New("stale or unknown reinstall token")

// WorkflowStore persists workflows.
type WorkflowStore interface {
	Workflow(ctx context.Context, mac string) (Workflow, error)
	Workflows(ctx context.Context) ([]Workflow, error)
	// SwapWorkflow stores next if the machine's stored workflow still has
	// generation prev (0: none stored); otherwise ErrPrecondition.
	SwapWorkflow(ctx context.Context, prev uint64, next Workflow) error
}

// MachineStore returns machine records.
type MachineStore interface {
	GetMachine(ctx context.Context, mac string) (*Machine, error)
}

// Gate is what a machine being reinstalled is served instead of its
// group's profile.
type Gate struct {
	State WorkflowState
	// Profile is the install profile (booting and installing).
	Profile string
	Token   string
}

// Installs reports whether the machine is to boot the installer.
func (g Gate) Installs() bool {
	return g.State == StateBooting || g.State == StateInstalling || g.State == StateBMCPrep
}

// Select is what a held machine boots: its own selection with the install
// profile in place of its group's while it installs, and always a group
// (an empty one when none matches it: the install profile then renders
// with the request's labels only).
func (g Gate) Select(snap *Snapshot, sel Selection) (Selection, error) {
	if g.Installs() {
		p, ok := snap.Profile(g.Profile)
		if !ok {
			// The server's configuration is at fault, not the request.
			return sel, fmt.Errorf("install profile %q of the reinstall is missing", g.Profile)
		}
		sel.Profile = p
	}
	if sel.Group == nil {
		sel.Group = &Group{Profile: g.Profile}
	}
	return sel, nil
}
