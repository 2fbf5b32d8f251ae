package power_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/secrettest"
	"matchbox.dev/matchbox/power"
	"matchbox.dev/matchbox/recorder"
	"matchbox.dev/matchbox/storage"
)

// leakyController fails every call with the password in its error, in the
// forms careless code and the service puts it in.
type leakyController struct{}

func (leakyController) fail(b matchbox.BMC) error {
	return fmt.Errorf("login %q refused: %s at /x?p=%s: %w", b.Password, secrettest.JSONText(b.Password), url.QueryEscape(b.Password), matchbox.ErrUnavailable)
}

func (c leakyController) PowerState(_ context.Context, b matchbox.BMC) (matchbox.PowerState, error) {
	return matchbox.PowerUnknown, c.fail(b)
}

func (c leakyController) SetPower(_ context.Context, b matchbox.BMC, _ matchbox.PowerAction) error {
	return c.fail(b)
}

func (c leakyController) SetBootDevice(_ context.Context, b matchbox.BMC, _ matchbox.BootDevice, _ bool) error {
	return c.fail(b)
}

// Whatever a controller lets through, the BMC service redacts: in the
// errors it returns (API answers, workflow reasons) and in the machine
// events the read role sees.
func TestServiceRedactsControllerErrors(t *testing.T) {
	ctx := context.Background()
	db := storage.NewMemory()
	key, err := storage.NewSecretKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	db.SetSecretKey(key)
	const mac = "52:54:00:00:00:31"
	if err := db.SetMachineBMC(ctx, mac, matchbox.BMC{Address: "10.0.0.31", Username: "u", Password: secrettest.Secret}); err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(db, nil)
	bmcs := &power.Service{Settings: db, Controller: leakyController{}, Recorder: rec}
	var errs []error
	_, err = bmcs.PowerState(ctx, mac)
	errs = append(errs, err, bmcs.SetPower(ctx, mac, matchbox.ActionOn), bmcs.SetBootDevice(ctx, mac, matchbox.BootPXE, true))
	rec.Flush(ctx)
	events, err := db.MachineEvents(ctx, mac)
	if err != nil || len(events) != 3 {
		t.Fatalf("events: %d, %v", len(events), err)
	}
	for _, e := range errs {
		if !errors.Is(e, matchbox.ErrUnavailable) {
			t.Errorf("the error lost its kind: %v", e)
		}
	}
	texts := []string{fmt.Sprint(errs)}
	for _, e := range events {
		data, _ := json.Marshal(e)
		texts = append(texts, string(data))
	}
	for _, text := range texts {
		for _, f := range secrettest.Fragments {
			if strings.Contains(text, f) {
				t.Errorf("%q of the password in %s", f, text)
			}
		}
	}
}
