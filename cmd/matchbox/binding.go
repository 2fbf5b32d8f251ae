package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	mbhttp "matchbox.dev/matchbox/http"
	"matchbox.dev/matchbox/recorder"
)

// bindingConfig is the part of `matchbox serve` that decides who may have
// a machine's config, and how many machines the inventory takes.
type bindingConfig struct {
	mode        string
	maxMachines int
}

func bindingFlags(fs *flag.FlagSet) *bindingConfig {
	b := &bindingConfig{}
	fs.StringVar(&b.mode, "config-binding", "", `who gets a machine's configs (/ignition, /cloud, /generic, /metadata), reinstall tokens and installer reports: "lease" (only the address holding the machine's DHCP lease) or "off" (anyone naming its MAC); default lease when the DHCP server runs in full mode on every interface, else off`)
	fs.IntVar(&b.maxMachines, "max-machines", 50000, "most machines the inventory holds; past it, events of machines not in it are not recorded (0: no bound)")
	return b
}

// leaseHolder returns what lease binding asks (nil: binding off), after
// checking the mode against the DHCP setup.
func (b *bindingConfig) leaseHolder(nb *netboot, log *slog.Logger) (mbhttp.LeaseHolder, error) {
	if b.maxMachines < 0 {
		return nil, errors.New("-max-machines: must be 0 (no bound) or more")
	}
	mode := b.mode
	if mode == "" {
		mode = "off"
		if nb.dhcp != nil && nb.allFull {
			mode = "lease"
		}
	}
	switch mode {
	case "off":
		if nb.dhcp != nil {
			log.Warn("config binding is off: any host that names a machine's MAC gets its configs and reinstall token (see docs/security.md)")
		}
		return nil, nil
	case "lease":
		if nb.dhcp == nil {
			return nil, errors.New("-config-binding lease: needs matchbox's DHCP server handing out addresses (-dhcp-mode full with a -dhcp-range)")
		}
		if !nb.allFull {
			log.Warn("config binding by lease: machines on interfaces where DHCP runs in proxy mode hold no lease of ours and get 403 for their configs")
		}
		log.Info("config binding by lease: configs, reinstall tokens and reports go only to the address holding the machine's lease")
		return nb.dhcp, nil
	}
	return nil, fmt.Errorf("-config-binding: %q is not lease or off", b.mode)
}

// inventoryMetrics exports the inventory's size, bound and refusals.
func inventoryMetrics(reg prometheus.Registerer, db matchbox.InventoryStore, rec *recorder.Recorder, maxMachines int) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "matchbox_machines", Help: "Machine records in the inventory."},
			func() float64 { return float64(db.MachineCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "matchbox_machines_max", Help: "Most machine records events may create (-max-machines; 0: no bound)."},
			func() float64 { return float64(maxMachines) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "matchbox_machine_events_not_recorded_total", Help: "Events of machines not in the inventory that were not recorded, by reason.",
			ConstLabels: prometheus.Labels{"reason": "full"}}, func() float64 { return float64(rec.NotRecorded().Full) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "matchbox_machine_events_not_recorded_total", Help: "Events of machines not in the inventory that were not recorded, by reason.",
			ConstLabels: prometheus.Labels{"reason": "unconfirmed"}}, func() float64 { return float64(rec.NotRecorded().Unconfirmed) }),
	)
}
