package update

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	// Windows name IANA time zones; a host without zoneinfo still has them.
	_ "time/tzdata"

	"matchbox.dev/matchbox"
)

// Window is a recurring time when updates may be granted: some days of
// the week, from a time of day to another, in a time zone. A window whose
// end is not after its start runs past midnight into the next day (the
// day named is the day it starts).
type Window struct {
	days       [7]bool // by time.Weekday
	start, end int     // minutes after midnight; end may be 24*60
	loc        *time.Location
	spec       string
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseWindow reads a window as operators write it: days, times and an
// optional time zone (UTC when left out), e.g. "Mon-Fri 09:00-17:00
// Europe/Berlin", "Sat,Sun 00:00-24:00", "daily 22:00-06:00 UTC". Days are
// three-letter names, ranges of them (Fri-Mon wraps) and lists, or
// "daily".
func ParseWindow(spec string) (Window, error) {
	fields := strings.Fields(spec)
	if len(fields) < 2 || len(fields) > 3 {
		return Window{}, fmt.Errorf("window %s: want DAYS HH:MM-HH:MM [ZONE], e.g. \"Mon-Fri 09:00-17:00 Europe/Berlin\": %w", matchbox.Quote(spec), matchbox.ErrInvalid)
	}
	w := Window{loc: time.UTC, spec: strings.Join(fields, " ")}
	if err := w.parseDays(fields[0]); err != nil {
		return Window{}, fmt.Errorf("window %s: %w", matchbox.Quote(spec), err)
	}
	from, to, ok := strings.Cut(fields[1], "-")
	var err error
	if !ok {
		return Window{}, fmt.Errorf("window %s: times %s: want HH:MM-HH:MM: %w", matchbox.Quote(spec), matchbox.Quote(fields[1]), matchbox.ErrInvalid)
	}
	if w.start, err = clockMinutes(from, false); err == nil {
		w.end, err = clockMinutes(to, true)
	}
	if err != nil {
		return Window{}, fmt.Errorf("window %s: %w", matchbox.Quote(spec), err)
	}
	if w.start == w.end {
		return Window{}, fmt.Errorf("window %s: starts and ends at the same time (00:00-24:00 is a whole day): %w", matchbox.Quote(spec), matchbox.ErrInvalid)
	}
	if len(fields) == 3 {
		if w.loc, err = time.LoadLocation(fields[2]); err != nil || fields[2] == "Local" || fields[2] == "" {
			return Window{}, fmt.Errorf("window %s: time zone %s: want an IANA name such as Europe/Berlin, or UTC: %w", matchbox.Quote(spec), matchbox.Quote(fields[2]), matchbox.ErrInvalid)
		}
	}
	return w, nil
}

func (w *Window) parseDays(s string) error {
	if strings.EqualFold(s, "daily") {
		for d := range w.days {
			w.days[d] = true
		}
		return nil
	}
	for part := range strings.SplitSeq(s, ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, okA := weekdays[strings.ToLower(from)]
		b, okB := a, okA
		if isRange {
			b, okB = weekdays[strings.ToLower(to)]
		}
		if !okA || !okB {
			return fmt.Errorf("days %s: want Mon, Tue, …, Sun, ranges (Mon-Fri), lists (Sat,Sun) or daily: %w", matchbox.Quote(s), matchbox.ErrInvalid)
		}
		for d := a; ; d = (d + 1) % 7 {
			w.days[d] = true
			if d == b {
				break
			}
		}
	}
	return nil
}

// clockMinutes reads HH:MM as minutes after midnight; 24:00 only as an end.
func clockMinutes(s string, end bool) (int, error) {
	hh, mm, ok := strings.Cut(s, ":")
	h, errH := strconv.Atoi(hh)
	m, errM := strconv.Atoi(mm)
	switch {
	case !ok || len(hh) != 2 || len(mm) != 2 || errH != nil || errM != nil || m > 59:
	case h < 24:
		return h*60 + m, nil
	case h == 24 && m == 0 && end:
		return 24 * 60, nil
	}
	return 0, fmt.Errorf("time %s: want HH:MM, 00:00 to 23:59 (24:00 as an end): %w", matchbox.Quote(s), matchbox.ErrInvalid)
}

// Contains reports whether t falls in the window.
func (w Window) Contains(t time.Time) bool {
	t = t.In(w.loc)
	m := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	if w.start < w.end {
		return w.days[day] && m >= w.start && m < w.end
	}
	// Past midnight: from the start on the day named, until the end on
	// the day after it.
	return w.days[day] && m >= w.start || w.days[(day+6)%7] && m < w.end
}

// String is the window as written (fields separated by one space).
func (w Window) String() string { return w.spec }

// MarshalText and UnmarshalText store a window as its spec.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.spec), nil }

func (w *Window) UnmarshalText(b []byte) error {
	p, err := ParseWindow(string(b))
	if err != nil {
		return err
	}
	*w = p
	return nil
}
