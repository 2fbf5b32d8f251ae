package dhcp

import (
	"context"
	"log/slog"
)

// replyNotSent logs a reply the socket did not take.
func (s *Server) replyNotSent(l Listener, mac string, err error) {
	s.limit.Log(context.Background(), slog.LevelWarn, "dhcp: reply not sent", l.Interface+" "+err.Error(), "interface", l.Interface, "mac", mac, "err", err)
}
