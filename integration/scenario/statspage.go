package scenario

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/chromedp/chromedp"
)

// StatsDOM is what the rendered stats page shows of app2's VIP, read from
// the DOM by the browser.
type StatsDOM struct {
	Found      bool         `json:"found"`
	Programmed int          `json:"programmed"`
	Live       int          `json:"live"`
	Summary    string       `json:"summary"`
	TotalConns string       `json:"totalConns"`
	Points     int          `json:"points"`
	Backends   []BackendDOM `json:"backends"`
}

// BackendDOM is one backend row of the page.
type BackendDOM struct {
	Addr     string `json:"addr"`
	State    string `json:"state"`
	Active   string `json:"active"`
	Conns    string `json:"conns"`
	BytesIn  string `json:"bytesIn"`
	BytesOut string `json:"bytesOut"`
}

// byAddr indexes the backend rows by address.
func (d StatsDOM) byAddr() map[string]BackendDOM {
	m := map[string]BackendDOM{}
	for _, x := range d.Backends {
		m[x.Addr] = x
	}
	return m
}

const readStatsDOM = `(() => {
  const s = document.querySelector('section.vip[data-vip="` + AppVIP + `"]');
  if (!s) return {found: false, backends: []};
  const txt = (e, c) => { const x = e && e.querySelector("td." + c); return x ? x.textContent : ""; };
  const line = s.querySelector("polyline");
  return {
    found: true,
    programmed: Number(s.dataset.programmed), live: Number(s.dataset.live),
    summary: s.querySelector(".prog").textContent,
    totalConns: txt(s.querySelector("tr.total"), "conns"),
    points: line ? line.getAttribute("points").trim().split(/\s+/).filter(Boolean).length : 0,
    backends: [...s.querySelectorAll("tr.backend")].map(r => ({addr: r.dataset.backend, state: r.dataset.state,
      active: txt(r, "active"), conns: txt(r, "conns"), bytesIn: txt(r, "bytes-in"), bytesOut: txt(r, "bytes-out")})),
  };
})()`

// StatsResult is what the stats page showed.
type StatsResult struct {
	Rendered      time.Duration // from navigation to the first backend row
	Before, After StatsDOM      // before and after the requests
	Sent          int
	Draining      StatsDOM // with the drained backend's connection held
	Shot          string   // the screenshot's path
	ShotBytes     int
}

// StatsPage opens node i's stats page (/haproxy?stats) in headless Chromium
// and checks the rendered DOM: app2's VIP programmed on 3 of 3 live nodes
// with backends up (name -> address); after `sent` requests from node i,
// the VIP's total connections up by exactly that many, on both backends,
// with bytes counted; then drain (name, address on node) deregistered while
// a connection to it is held: shown draining with 1 active connection; a
// history chart; a PNG screenshot written to shot.
func StatsPage(e *Env, i int, up map[string]string, sent int, drain string, drainNode int, shot string) StatsResult {
	t := e.T
	t.Helper()
	var res StatsResult
	svc := e.appService(i)
	ctx, cancel := context.WithTimeout(e.Browser(i), 6*time.Minute) // Chromium's start in the guest took 92 s under load
	defer cancel()
	page := e.StatsURL(i) + "/haproxy?stats"
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(`section.vip tr.backend`)); err != nil {
		t.Fatalf("open %s in chromium: %v", page, err)
	}
	res.Rendered = time.Since(start)
	read := func() StatsDOM {
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](readStatsDOM))
		if err != nil {
			t.Fatalf("read the DOM: %v", err)
		}
		var d StatsDOM
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("DOM answer %s: %v", raw, err)
		}
		return d
	}
	// The page refreshes itself (every 2 s): wait for what it must show.
	wait := func(what string, cond func(StatsDOM) bool) StatsDOM {
		t.Helper()
		var d StatsDOM
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
			if d = read(); cond(d) {
				return d
			}
		}
		t.Fatalf("the stats page never showed %s; it shows %+v", what, d)
		return d
	}
	res.Before = wait("app2 on 3 of 3 nodes with its instances up", func(d StatsDOM) bool {
		m := d.byAddr()
		ok := d.Found && d.Programmed == 3 && d.Live == 3
		for _, addr := range up {
			ok = ok && m[addr].State == "up"
		}
		return ok
	})
	e.Say("the stats page in Chromium (%s, rendered in %v): %s; backends %s", page, res.Rendered.Round(time.Millisecond), res.Before.Summary, rows(res.Before))
	before := count(res.Before.TotalConns)
	res.Sent = sent
	seen := e.Spread(i, "http://"+svc+"/", sent)
	res.After = wait("the VIP's total connections up by the requests sent", func(d StatsDOM) bool {
		return count(d.TotalConns) == before+sent
	})
	e.Say("%d requests from node%d (%s): the page's total connections went from %d to %s; backends %s",
		sent, i, FormatSpread(seen), before, res.After.TotalConns, rows(res.After))
	m := res.After.byAddr()
	sum := 0
	for name, addr := range up {
		if seen[name] > 0 && count(m[addr].Conns) == count(res.Before.byAddr()[addr].Conns) {
			t.Errorf("%s answered %d requests but its connections on the page did not move (%s)", name, seen[name], m[addr].Conns)
		}
		if seen[name] > 0 && (m[addr].BytesIn == "0 B" || m[addr].BytesOut == "0 B") {
			t.Errorf("%s's bytes did not move: in %s, out %s", name, m[addr].BytesIn, m[addr].BytesOut)
		}
		sum += count(m[addr].Conns)
	}
	if sum != before+sent {
		t.Errorf("the backends' connections sum to %d, want the VIP's %d", sum, before+sent)
	}

	held := e.holdOn(i, svc, drain)
	defer held.Close()
	e.L4LB(drainNode, "deregister", AppVIP, up[drain])
	res.Draining = wait(drain+" draining with 1 active connection, and a history chart", func(d StatsDOM) bool {
		x := d.byAddr()[up[drain]]
		return x.State == "draining" && x.Active == "1" && d.Points >= 2
	})
	e.Say("after l4lb deregister of %s with a connection held open: %s", drain, rows(res.Draining))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(png) < 10000 || string(png[1:4]) != "PNG" {
		t.Errorf("the screenshot is not a PNG of a page (%d bytes)", len(png))
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatalf("write the screenshot: %v", err)
	}
	res.Shot, res.ShotBytes = shot, len(png)
	e.Say("screenshot of the stats page: %s (%d bytes)", shot, len(png))
	return res
}

// rows renders backend rows for people.
func rows(d StatsDOM) string {
	s := ""
	for k, b := range d.Backends {
		if k > 0 {
			s += "; "
		}
		s += b.Addr + " " + b.State + ", " + b.Active + " active, " + b.Conns + " total"
	}
	return s
}

// count reads a count as the page prints it ("1,234"); -1 if it is not one.
func count(s string) int {
	n := 0
	if s == "" {
		return -1
	}
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			n = n*10 + int(r-'0')
		case r == ',':
		default:
			return -1
		}
	}
	return n
}
