package services

import (
	"context"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

func (svc *service) status() Status {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return svc.st
}

// run is one service's life, top to bottom: wait until it can start,
// start it, watch it, and when it ends ask the restart policy what next.
func (s *Supervisor) run(svc *service) {
	defer close(svc.done)
	log := s.cfg.Log.WithField("service", svc.def.Name)
	failures := 0
	for {
		d, ok := s.awaitStartable(svc)
		if !ok {
			s.update(svc, func(st *Status) { st.State, st.Reason, st.NextStart = StateStopped, "", time.Time{} })
			return
		}
		started := time.Now()
		svc.mu.Lock()
		svc.killCause = ""
		svc.mu.Unlock()
		r, err := s.startTask(d, svc)
		if err != nil {
			select {
			case <-svc.stop:
				s.update(svc, func(st *Status) { st.State = StateStopped })
				return
			case <-d.down:
				continue
			default:
			}
			exit := &ExitInfo{Code: -1, Error: err.Error(), Time: time.Now(), Ran: "0s"}
			if failures, ok = s.backoff(svc, log, failures, 0, exit); !ok {
				return
			}
			continue
		}
		s.update(svc, func(st *Status) {
			st.State, st.PID, st.Reason, st.NextStart = StateStarting, r.PID(), "", time.Time{}
		})
		log.WithField("pid", r.PID()).Info("service started")
		watchCtx, stopWatching := context.WithCancel(context.Background())
		go s.watch(watchCtx, svc, r, log)
		select {
		case st := <-r.Exited():
			stopWatching()
			if st.Error() != nil {
				// The wait broke, not the service: containerd went away.
				select {
				case <-d.down:
				case <-svc.stop:
				}
				r.Abandon()
				continue
			}
			ran := time.Since(started)
			r.Finish()
			svc.mu.Lock()
			cause := svc.killCause
			svc.mu.Unlock()
			exit := &ExitInfo{Code: int(st.ExitCode()), Time: st.ExitTime(), Ran: ran.Round(time.Millisecond).String(), Output: tailText(svc.sink.Ring, 10), Cause: cause}
			if code := st.ExitCode(); code > 128 && code < 128+65 {
				exit.Signal = unix.SignalName(syscall.Signal(code - 128))
			}
			if failures, ok = s.backoff(svc, log, failures, ran, exit); !ok {
				return
			}
		case <-d.down:
			stopWatching()
			r.Abandon()
		case <-svc.stop:
			stopWatching()
			s.stopTask(svc, r, log)
			s.update(svc, func(st *Status) { st.State = StateStopped })
			return
		case <-svc.restart:
			stopWatching()
			log.Info("restart requested")
			s.stopTask(svc, r, log)
			s.update(svc, func(st *Status) { st.Restarts++; st.State, st.Reason = StateWaiting, "restarting on request" })
			failures = 0
		}
	}
}

// awaitStartable waits until containerd runs and every dependency is
// ready, showing what it waits for; false means a stop came first.
func (s *Supervisor) awaitStartable(svc *service) (*daemon, bool) {
	for {
		s.mu.Lock()
		changed, d := s.changed, s.cur
		s.mu.Unlock()
		reason := ""
		if d == nil {
			reason = "containerd is not running"
		} else if dep := s.unreadyDependency(svc); dep != "" {
			reason = dep + " is not ready"
		}
		if reason == "" {
			return d, true
		}
		s.update(svc, func(st *Status) { st.State, st.Reason, st.Ready = StateWaiting, reason, false })
		select {
		case <-changed:
		case <-svc.stop:
			return nil, false
		}
	}
}

func (s *Supervisor) unreadyDependency(svc *service) string {
	for _, dep := range svc.def.DependsOn {
		if other := s.find(dep); other != nil && !other.status().Ready {
			return dep
		}
	}
	return ""
}

// backoff records an exit, asks the restart policy for the delay and
// waits it out. It returns the new count of consecutive failures, and
// false when a stop came while waiting.
func (s *Supervisor) backoff(svc *service, log *logrus.Entry, failures int, ran time.Duration, exit *ExitInfo) (int, bool) {
	failures, delay, state := s.cfg.Restart.Next(failures, ran)
	var restarts int
	s.update(svc, func(st *Status) {
		exitedWhile(st, exit, state, failures, delay)
		restarts = st.Restarts
	})
	fields := logrus.Fields{"exitCode": exit.Code, "ran": exit.Ran, "restarts": restarts, "restartIn": delay.String(), "backoffMs": delay.Milliseconds()}
	if exit.Error != "" {
		fields["error"] = exit.Error
	}
	if exit.Cause != "" {
		fields["cause"] = exit.Cause
	}
	if state == StateFailed {
		log.WithFields(fields).WithField("lastOutput", strings.Join(exit.Output, " | ")).Error("service is failing")
	} else {
		log.WithFields(fields).Warn("service exited; restarting")
	}
	select {
	case <-time.After(delay):
		return failures, true
	case <-svc.restart:
		return failures, true
	case <-svc.stop:
		s.update(svc, func(st *Status) { st.State, st.NextStart = StateStopped, time.Time{} })
		return failures, false
	}
}

// watch polls the readiness probe until it passes once, marks the service
// running, and then runs its liveness probe until ctx ends.
func (s *Supervisor) watch(ctx context.Context, svc *service, t task, log *logrus.Entry) {
	start := time.Now()
	if p := svc.def.Ready; p != nil {
		for delay := 2 * time.Millisecond; ; delay = min(delay*2, 10*time.Millisecond) {
			try, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := p.Check(try)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	s.update(svc, func(st *Status) { st.State, st.Ready = StateRunning, true })
	s.mark(svc.def.Name + ": ready (its readiness probe passed)")
	log.WithField("ms", time.Since(start).Milliseconds()).Info("service is ready")
	p := svc.def.Live
	if p == nil {
		return
	}
	liveness{
		timing:  svc.def.LiveTiming.or(s.cfg.Liveness),
		resting: s.resting.Load,
		times:   s.cpuTimesOf(t.PID()),
		check:   p.Check,
		failing: func(silent, starved time.Duration, err error) {
			reason := notAnswering(silent, starved, err)
			s.update(svc, func(st *Status) { st.State, st.Ready, st.Reason = StateUnresponsive, false, reason })
			log.WithField("reason", reason).Warn("service is not answering")
		},
		recovered: func() {
			s.update(svc, func(st *Status) { st.State, st.Ready, st.Reason = StateRunning, true, "" })
			log.Info("service answers again")
		},
		kill: func(reason string) {
			log.WithField("reason", reason).Error("service is not answering; killing it")
			svc.mu.Lock()
			svc.killCause = reason
			svc.mu.Unlock()
			if err := t.Signal(syscall.SIGKILL); err != nil {
				log.WithError(err).Warn("SIGKILL failed")
			}
		},
	}.run(ctx)
}
