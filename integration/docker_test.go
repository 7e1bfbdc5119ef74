package integration

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
	"github.com/l4lb/l4lb/pkg/source/docker/dockertest"
)

// TestDockerSeedNFTables is the seed with Docker-run instances: a real
// Docker engine runs in node1's network namespace and node1's agent follows
// it (--docker-endpoint); app2's instances are containers labelled
// l4lb.vip.8080=/dcos-101/app2:10000 and published on a host port. One
// instance, then two, then one: node2 (which runs no Docker) has each
// change in its kernel within a second, its DNS answers the name, and
// requests through the VIP from node2 reach the containers. Then start and
// stop are timed, event to node2's kernel. It runs on the host kernel with
// the nftables data plane (see hostTests); Docker inside the UML guest,
// for the same seed through IPVS, has not been tried.
func TestDockerSeedNFTables(t *testing.T) {
	e := scenario.NewPlane(t, scenario.NFTables, 2, bed.Binary(t, "l4lb"), bed.Binary(t, "l4lb-demoapp"), t.Logf)
	eng := dockertest.Start(t, "", dockertest.Options{Netns: e.C.Node(1).Path()})
	t.Cleanup(eng.Remove)
	demo, err := dockertest.BuildDemo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	eng.ImportDemo(demo)

	e.AgentFlags = map[int][]string{1: {"--docker-endpoint", "unix://" + eng.Sock}}
	for _, i := range []int{1, 2} {
		e.StartAgent(i)
	}
	for _, i := range []int{1, 2} {
		e.WaitReady(i, 30*time.Second)
	}
	node1 := e.C.Node(1).Addr.String()
	labels := map[string]string{"l4lb.vip.8080": scenario.AppVIP}
	app := func(name string) dockertest.Box {
		return dockertest.Box{Name: name, Labels: labels, Publish: []string{"8080/tcp"}}
	}
	backend := func(id string) string {
		return net.JoinHostPort(node1, strconv.Itoa(int(eng.HostPort(id, "8080/tcp"))))
	}
	in := func(b string) func(map[string]int) bool {
		return func(rs map[string]int) bool { return rs[b] > 0 }
	}
	out := func(b string) func(map[string]int) bool {
		return func(rs map[string]int) bool { return rs[b] == 0 }
	}

	t.Log("== one container on node1, labelled ", labels)
	start := time.Now()
	a := eng.Run(app("app2-a"))
	vipAddr := e.WaitDig(2, scenario.AppName, 10*time.Second)
	vip := net.JoinHostPort(vipAddr, "10000")
	ba := backend(a)
	e.WaitRealServers(2, vip, 10*time.Second, "container app2-a in node2's kernel", in(ba))
	t.Logf("docker run -> %s answers %s in node2's DNS and %s is in node2's kernel: %v", scenario.AppName, vipAddr, ba, time.Since(start))
	url := "http://" + vip + "/"
	hostA := eng.Inspect(a).Config.Hostname
	if who, err := e.Get(2, url); err != nil || who != hostA {
		t.Fatalf("curl %s from node2: %q, %v; want container app2-a (%s)", url, who, err, hostA)
	}

	t.Log("== a second container: both serve, from node2")
	b := eng.Run(app("app2-b"))
	bb := backend(b)
	if d := e.WaitRealServers(2, vip, 10*time.Second, "container app2-b in node2's kernel", in(bb)); d > time.Second {
		t.Errorf("container app2-b reached node2's kernel %v after docker run returned, want within 1s", d)
	}
	hostB := eng.Inspect(b).Config.Hostname
	seen := e.Spread(2, url, 12)
	t.Logf("12 requests from node2: %s", scenario.FormatSpread(seen))
	if seen[hostA] == 0 || seen[hostB] == 0 || seen[hostA]+seen[hostB] != 12 {
		t.Errorf("requests from node2 not spread over both containers (%s, %s): %s", hostA, hostB, scenario.FormatSpread(seen))
	}
	vips := e.VIPs(2)
	var backends []string
	for _, v := range vips.VIPs {
		for _, be := range v.Backends {
			backends = append(backends, be.Address)
		}
	}
	if !slices.Contains(backends, ba) || !slices.Contains(backends, bb) {
		t.Errorf("l4lb vips on node2 shows backends %v, want %s and %s", backends, ba, bb)
	}

	t.Log("== docker stop app2-b: it drains everywhere; only app2-a answers")
	if _, err := eng.Cli.ContainerStop(context.Background(), b, client.ContainerStopOptions{}); err != nil {
		t.Fatalf("docker stop app2-b: %v", err)
	}
	if d := e.WaitRealServers(2, vip, 10*time.Second, "app2-b drained in node2's kernel", out(bb)); d > time.Second {
		t.Errorf("app2-b left node2's kernel %v after docker stop returned, want within 1s", d)
	}
	seen = e.Spread(2, url, 8)
	if seen[hostA] != 8 {
		t.Errorf("after docker stop app2-b, requests from node2 reached %s; want only app2-a", scenario.FormatSpread(seen))
	}

	// Start -> in node2's kernel and kill -> out of it, timed over a
	// bounded number of containers.
	const rounds = 15
	var up, down []time.Duration
	for r := range rounds {
		id := eng.Create(app(fmt.Sprintf("round-%d", r)))
		t0 := time.Now()
		eng.StartContainer(id)
		be := backend(id)
		e.WaitRealServers(2, vip, 10*time.Second, "container in node2's kernel", in(be))
		up = append(up, time.Since(t0))
		t0 = time.Now()
		if _, err := eng.Cli.ContainerKill(context.Background(), id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Fatalf("docker kill: %v", err)
		}
		e.WaitRealServers(2, vip, 10*time.Second, "killed container out of node2's kernel", out(be))
		down = append(down, time.Since(t0))
		if _, err := eng.Cli.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true}); err != nil {
			t.Fatalf("docker rm: %v", err)
		}
	}
	t.Logf("docker start -> backend in node2's kernel (%d containers): p50 %v p99 %v; docker kill -> out: p50 %v p99 %v",
		rounds, scenario.Percentile(up, 50), scenario.Percentile(up, 99), scenario.Percentile(down, 50), scenario.Percentile(down, 99))
	if p := scenario.Percentile(up, 50); p > time.Second {
		t.Errorf("docker start -> node2's kernel p50 %v, want within 1s", p)
	}
	rs := e.RealServers(2, vip)
	var live []string
	for k, w := range rs {
		if w > 0 {
			live = append(live, k)
		}
	}
	if len(live) != 1 || live[0] != ba {
		t.Errorf("at the end node2's kernel serves %v, want only %s: %s", live, ba, e.C.Node(2).MustRun(t, "nft", "list", "table", "inet", "l4lb"))
	}
}
