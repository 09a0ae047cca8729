package pid1

import (
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/settings"
)

// The control API's types are its own (its schema is not whatever the
// supervisor's or the settings' structs are): PID 1 says what it observes
// in them.

func serviceStatus(st services.Status) control.ServiceStatus {
	out := control.ServiceStatus{Name: st.Name, State: st.State, Ready: st.Ready, Required: st.Required, PID: st.PID,
		Restarts: st.Restarts, Since: st.Since, NextStart: st.NextStart, Reason: st.Reason, Runtime: st.Runtime}
	if e := st.LastExit; e != nil {
		out.LastExit = &control.Exit{Code: e.Code, Signal: e.Signal, Error: e.Error, Cause: e.Cause, Time: e.Time, Ran: e.Ran, Output: e.Output}
	}
	return out
}

func serviceStatuses(sts []services.Status) []control.ServiceStatus {
	out := make([]control.ServiceStatus, 0, len(sts))
	for _, st := range sts {
		out = append(out, serviceStatus(st))
	}
	return out
}

func recoveries(rs []settings.Recovery) []control.Recovery {
	var out []control.Recovery
	for _, r := range rs {
		out = append(out, control.Recovery{File: r.File, Reason: r.Reason, KeptAs: r.KeptAs, Using: r.Using})
	}
	return out
}

func settingsView(v settings.View) control.Settings {
	return control.Settings{Generation: v.Generation, Settings: v.Settings, Applying: v.Applying, LastError: v.LastError, Recovered: recoveries(v.Recovered)}
}
