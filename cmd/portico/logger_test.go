package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestConsoleLogTimeFieldsHaveADate: a certificate's not_after (or a
// retry's next_attempt) next week must not print as a bare time of day.
func TestConsoleLogTimeFieldsHaveADate(t *testing.T) {
	notAfter := time.Date(2026, 12, 8, 20, 26, 51, 0, time.UTC)
	for _, format := range []string{"console", "json"} {
		var buf bytes.Buffer
		logger, err := newLogger(format, &buf)
		if err != nil {
			t.Fatal(err)
		}
		logger.Info("certificate ready", zap.String("name", "app.localhost"), zap.Time("not_after", notAfter))
		line := buf.String()
		if !strings.Contains(line, "2026-12-08T20:26:51.000Z") {
			t.Errorf("%s: not_after is not printed with its date:\n%s", format, line)
		}
		if ts := strings.Fields(line)[0]; format == "console" && !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}`).MatchString(ts) {
			t.Errorf("console: the line's own time %q has no date", ts)
		}
	}
}
