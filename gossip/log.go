package gossip

import (
	"bytes"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// logLimiter lets through at most burst lines per period and counts the
// rest, so that a peer sending garbage cannot flood the log.
type logLimiter struct {
	burst  int
	period time.Duration

	mu         sync.Mutex // guards the fields below
	start      time.Time
	used       int
	suppressed int
}

func newLogLimiter(burst int, period time.Duration) *logLimiter {
	return &logLimiter{burst: burst, period: period}
}

// allow reports whether a line may be logged now and, if so, how many lines
// were suppressed since the last one let through.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.period {
		l.start, l.used = now, 0
	}
	if l.used >= l.burst {
		l.suppressed++
		return false, 0
	}
	l.used++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// memberlistLog receives memberlist's log lines ("[LEVEL] memberlist: ...")
// and hands them to logrus, warnings and errors rate limited. Its INFO lines
// go at debug level: the events they tell (a peer suspected, marked failed)
// are logged once by this package, with its fields. It also watches for the line memberlist writes when this node's
// failure detector suspects a peer, the only place that event is reported.
type memberlistLog struct {
	log       *logrus.Entry
	limit     *logLimiter
	counters  *counters
	onSuspect func(node string)
}

const suspectPrefix = "Suspect "
const suspectSuffix = " has failed, no acks received"

func (w *memberlistLog) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		w.line(string(line))
	}
	return len(p), nil
}

func (w *memberlistLog) line(s string) {
	level := logrus.InfoLevel
	if i := strings.Index(s, "["); i >= 0 {
		if j := strings.Index(s[i:], "]"); j > 0 {
			switch s[i+1 : i+j] {
			case "DEBUG", "INFO":
				level = logrus.DebugLevel
			case "WARN":
				level = logrus.WarnLevel
			case "ERR", "ERROR":
				level = logrus.ErrorLevel
				w.counters.memberlistErrors.Add(1)
			}
			s = strings.TrimSpace(s[i+j+1:])
		}
	}
	s = strings.TrimPrefix(s, "memberlist: ")
	if strings.HasPrefix(s, suspectPrefix) && strings.HasSuffix(s, suspectSuffix) && w.onSuspect != nil {
		w.onSuspect(strings.TrimSuffix(strings.TrimPrefix(s, suspectPrefix), suspectSuffix))
	}
	if !w.log.Logger.IsLevelEnabled(level) {
		return
	}
	entry := w.log.WithField("source", "memberlist")
	if level <= logrus.WarnLevel {
		ok, suppressed := w.limit.allow(time.Now())
		if !ok {
			return
		}
		if suppressed > 0 {
			entry = entry.WithField("suppressed", suppressed)
		}
	}
	entry.Log(level, s)
}
