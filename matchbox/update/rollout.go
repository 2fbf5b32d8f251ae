package update

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rollout is the stored progress of a group's rollout of one target: what
// the policy weighs, kept exact by every grant and every outcome. Its size
// is bounded whatever the fleet: at most maxTracked grants in flight and
// grantBuckets buckets of grant counts.
type rollout struct {
	Target string `json:"target"`
	// InFlight maps the machines holding a grant (their record keys) to
	// when it was made, when the policy weighs them (a limit in flight,
	// a canary, a pause after failures, which counts timeouts): at most
	// maxTracked (a group without a limit in flight may have more
	// machines in flight; the first maxTracked are followed).
	InFlight inFlight `json:"in_flight,omitempty"`
	// Grants counts the grants of the last period, oldest first.
	Grants    []grantBucket `json:"grant_buckets,omitempty"`
	Granted   int           `json:"granted"`
	Completed int           `json:"completed"`
	Failed    int           `json:"failed"`
}

// inFlight maps machines' record keys to when their grant was made. It is
// stored as one string, "KEY NANOS KEY NANOS …" (Unix nanoseconds; a key
// with a space, a quote or a byte outside printable ASCII in Go's quoted
// form), in no order: the record is rewritten with every grant, so it is
// written and read without sorting keys, formatting times or scanning
// JSON structure.
type inFlight map[string]time.Time

// MarshalJSON writes the compact form.
func (f inFlight) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+len(f)*40)
	for k, at := range f {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		if plainKey(k) {
			b = append(b, k...)
		} else {
			b = strconv.AppendQuoteToASCII(b, k)
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, at.UnixNano(), 10)
	}
	return json.Marshal(string(b))
}

// UnmarshalJSON reads the compact form.
func (f *inFlight) UnmarshalJSON(data []byte) error {
	var text string
	if err := json.Unmarshal(data, &text); err != nil {
		return fmt.Errorf("rollout in flight: %w", err)
	}
	m := make(inFlight, strings.Count(text, " ")/2+1)
	for text != "" {
		var k string
		if text[0] == '"' {
			q, err := strconv.QuotedPrefix(text)
			if err != nil {
				return fmt.Errorf("rollout in flight: %w", err)
			}
			k, _ = strconv.Unquote(q)
			text = strings.TrimPrefix(text[len(q):], " ")
		} else {
			var ok bool
			if k, text, ok = strings.Cut(text, " "); !ok {
				return fmt.Errorf("rollout in flight: %q has no time", k)
			}
		}
		var n string
		n, text, _ = strings.Cut(text, " ")
		ns, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return fmt.Errorf("rollout in flight: %s: %w", k, err)
		}
		m[k] = time.Unix(0, ns).UTC()
	}
	*f = m
	return nil
}

// plainKey reports whether k is stored as it is: printable ASCII without
// a space, quote or backslash (MACs and ordinary machine ids).
func plainKey(k string) bool {
	if k == "" || k[0] == '"' {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// maxTracked bounds the grants in flight a rollout follows one by one
// (and a group's MaxInFlight and Canary): the record is rewritten with
// every grant.
const maxTracked = 2_000

// grantBuckets is how many buckets a period's grants are counted in: a
// grant counts for up to a bucket's width (period/grantBuckets) longer
// than the period, never shorter, so the limit always holds.
const grantBuckets = 256

// grantBucket counts the grants made in [Start, Start+Width) (Unix
// seconds).
type grantBucket struct {
	Start int64 `json:"start"`
	Width int64 `json:"width"`
	N     int   `json:"n"`
}

// live reports whether the bucket may hold grants made within period of
// now.
func (b grantBucket) live(now time.Time, period time.Duration) bool {
	return period > 0 && b.Start+b.Width > now.Add(-period).Unix()
}

// readRollout decodes a stored rollout as it is.
func readRollout(data []byte) (rollout, error) {
	var r rollout
	if data != nil {
		if err := json.Unmarshal(data, &r); err != nil {
			return r, err
		}
	}
	if r.InFlight == nil {
		r.InFlight = map[string]time.Time{}
	}
	return r, nil
}

// decodeRollout decodes a stored rollout to grant target: the rollout of
// another target gives way to a new one.
func decodeRollout(data []byte, target string) (rollout, error) {
	r, err := readRollout(data)
	if err != nil {
		return r, err
	}
	r.retarget(target)
	return r, nil
}

// retarget starts the rollout of a new target: the canary and the
// failures count again; machines in flight keep their grants, and the
// period's grants still count.
func (r *rollout) retarget(target string) {
	if r.Target != target {
		*r = rollout{Target: target, InFlight: r.InFlight, Grants: r.Grants}
	}
}

// clone is a copy that can be changed without changing r.
func (r *rollout) clone() rollout {
	c := *r
	c.InFlight = maps.Clone(r.InFlight)
	if c.InFlight == nil {
		c.InFlight = map[string]time.Time{}
	}
	c.Grants = slices.Clone(r.Grants)
	return c
}

// countsFor is what the policy weighs at now for a rollout of target,
// without changing r: grants in flight past the timeout count as failed;
// expired says how many they are (to be written: expire).
func (r *rollout) countsFor(target string, now time.Time, p Policy) (c Rollout, expired int) {
	if r.Target == target {
		c = Rollout{Granted: r.Granted, Completed: r.Completed, Failed: r.Failed}
	}
	for _, at := range r.InFlight {
		if now.Sub(at) >= p.GrantTimeout() {
			expired++
		} else {
			c.InFlight++
		}
	}
	if r.Target == target {
		c.Failed += expired
	}
	for _, b := range r.Grants {
		if b.live(now, p.Period) {
			c.InPeriod += b.N
		}
	}
	return c, expired
}

// counts is what the policy weighs, once expire has run.
func (r *rollout) counts(now time.Time, p Policy) Rollout {
	c, _ := r.countsFor(r.Target, now, p)
	return c
}

// expire drops the grants older than the timeout (failures), returning
// their machines, and the buckets of grants older than the period.
func (r *rollout) expire(now time.Time, p Policy) []string {
	var out []string
	for id, at := range r.InFlight {
		if now.Sub(at) >= p.GrantTimeout() {
			delete(r.InFlight, id)
			r.Failed++
			out = append(out, id)
		}
	}
	r.Grants = slices.DeleteFunc(r.Grants, func(b grantBucket) bool { return !b.live(now, p.Period) })
	return out
}

// grant counts a grant to the machine with record key at now.
func (r *rollout) grant(key string, now time.Time, p Policy) {
	if p.tracks() && len(r.InFlight) < maxTracked {
		r.InFlight[key] = now
	}
	r.Granted++
	if p.Period <= 0 {
		return
	}
	w := max(1, int64(p.Period/time.Second)/grantBuckets)
	start := now.Unix() / w * w
	if n := len(r.Grants); n > 0 && r.Grants[n-1].Start == start && r.Grants[n-1].Width == w {
		r.Grants[n-1].N++
		return
	}
	r.Grants = append(r.Grants, grantBucket{Start: start, Width: w, N: 1})
}

// rolloutCache keeps each group's rollout decoded, by its stored bytes:
// a check reads the record (a copy of bytes) but decodes it only when it
// changed.
type rolloutCache struct {
	mu sync.Mutex
	by map[string]cachedRollout
}

type cachedRollout struct {
	raw []byte
	r   *rollout
}

// get returns the rollout stored as raw for group, to read only.
func (c *rolloutCache) get(group string, raw []byte) (*rollout, error) {
	c.mu.Lock()
	e, ok := c.by[group]
	c.mu.Unlock()
	if ok && string(e.raw) == string(raw) {
		return e.r, nil
	}
	r, err := readRollout(raw)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.by == nil {
		c.by = map[string]cachedRollout{}
	}
	c.by[group] = cachedRollout{raw: raw, r: &r}
	c.mu.Unlock()
	return &r, nil
}
