package xds

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/hashicorp/go-hclog"
)

// logAdapter makes an hclog.Logger usable as go-control-plane's logger.
// The library's chatter is shifted one level down (its Info is our Debug),
// because our own callbacks log the events an operator cares about.
type logAdapter struct {
	l hclog.Logger
}

var _ log.Logger = logAdapter{}

func (a logAdapter) Debugf(format string, args ...any) {
	if a.l.IsTrace() {
		a.l.Trace(fmt.Sprintf(format, args...))
	}
}

func (a logAdapter) Infof(format string, args ...any) {
	if a.l.IsDebug() {
		a.l.Debug(fmt.Sprintf(format, args...))
	}
}

func (a logAdapter) Warnf(format string, args ...any) {
	a.l.Warn(fmt.Sprintf(format, args...))
}

func (a logAdapter) Errorf(format string, args ...any) {
	a.l.Error(fmt.Sprintf(format, args...))
}
