package scenario

import (
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

// StatsPort is where every agent serves its stats page, on its node's
// address (--stats-listen).
const StatsPort = 9090

// StatsURL is node i's stats page, as reached from inside the node.
func (e *Env) StatsURL(i int) string {
	return "http://" + net.JoinHostPort(e.C.Node(i).Addr.String(), strconv.Itoa(StatsPort))
}

// StatsCSV fetches node i's /haproxy?stats;csv and returns its rows, the
// header first.
func (e *Env) StatsCSV(i int) ([][]string, error) {
	resp, err := e.C.Node(i).HTTPClient(5 * time.Second).Get(e.StatsURL(i) + "/haproxy?stats;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /haproxy?stats;csv: %s", resp.Status)
	}
	return csv.NewReader(resp.Body).ReadAll()
}

// Chromium is the browser the stats page is tested in: Debian's package
// chromium (make deps installs it).
const Chromium = "/usr/bin/chromium"

// Browser starts headless Chromium inside node i's network namespace (so
// that it reaches the node's stats page as a client of that node would),
// with a fresh profile, and returns a chromedp context on a tab of it. It
// is closed when the test ends.
func (e *Env) Browser(i int) context.Context {
	e.T.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		e.T.Fatalf("no browser: %v (make deps installs package chromium)", err)
	}
	profile, err := os.MkdirTemp("", "l4lb-chromium-")
	if err != nil {
		e.T.Fatalf("browser profile: %v", err)
	}
	e.T.Cleanup(func() { os.RemoveAll(profile) })
	ns := e.C.Node(i).Path()
	var out strings.Builder
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(Chromium),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true), chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(filepath.Join(profile, "data")), chromedp.WindowSize(1360, 900),
		chromedp.CombinedOutput(&out),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// Run it in the node's network namespace; the DevTools pipe
			// (inherited descriptors) goes through nsenter unchanged.
			cmd.Args = append([]string{"nsenter", "--net=" + ns, "--", cmd.Path}, cmd.Args[1:]...)
			cmd.Path = "/usr/bin/nsenter"
		}))
	ctx, cancel := chromedp.NewContext(actx)
	e.T.Cleanup(func() {
		cancel()
		acancel()
		if e.T.Failed() && out.Len() > 0 {
			e.T.Logf("chromium output:\n%s", out.String())
		}
	})
	return ctx
}
