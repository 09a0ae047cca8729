package logs

import (
	"fmt"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
)

// RingHook keeps a process's own log lines in a ring (PID 1's, for GET
// /logs without a service).
type RingHook struct{ Ring *Ring }

func (h RingHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h RingHook) Fire(e *logrus.Entry) error {
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		if k != "component" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(e.Message)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	h.Ring.Add(Line{Time: e.Time, Stream: e.Level.String(), Text: b.String()})
	return nil
}
