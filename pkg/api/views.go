package api

// The JSON documents of the API. Field names are part of the contract.

// VIPs is the answer of GET /v1/vips.
type VIPs struct {
	VIPs []VIP `json:"vips"`
	// Errors are the named VIPs the table could not hold, with why.
	Errors []string `json:"errors,omitempty"`
}

// VIP is one VIP as this node sees it.
type VIP struct {
	Label       string    `json:"label"`
	Name        string    `json:"name,omitempty"`
	Framework   string    `json:"framework,omitempty"`
	Names       []string  `json:"names,omitempty"`
	Address     string    `json:"address"`
	Port        uint16    `json:"port"`
	Protocol    string    `json:"protocol"`
	Scheduler   string    `json:"scheduler"`
	Persistence uint32    `json:"persistence"`
	Programmed  bool      `json:"programmed"`
	Backends    []Backend `json:"backends"`
	Conflicts   []string  `json:"conflicts,omitempty"`
	// ProgrammedOn are the live nodes whose kernel serves this VIP as
	// this node's table has it (see the agent's README); LiveNodes counts
	// the live nodes. Traffic sums the backends'.
	ProgrammedOn []string `json:"programmed_on,omitempty"`
	LiveNodes    int      `json:"live_nodes,omitempty"`
	Traffic      *Traffic `json:"traffic,omitempty"`
	// PublicPort is the VIP's port on public nodes (0: not public);
	// PublishedAt the addresses and port at which this node serves it,
	// when this node is public.
	PublicPort  uint16   `json:"public_port,omitempty"`
	PublishedAt []string `json:"published_at,omitempty"`
}

// Backend is one backend of a VIP.
type Backend struct {
	Address     string `json:"address"`
	Node        string `json:"node"`
	Weight      uint32 `json:"weight"`
	Health      string `json:"health"`
	ActiveConns int    `json:"active_conns"`
	InactConns  int    `json:"inact_conns"`
	// State is up, draining or down, with why when not up.
	State   string   `json:"state,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Traffic *Traffic `json:"traffic,omitempty"`
}

// Members is the answer of GET /v1/members.
type Members struct {
	Members []Member `json:"members"`
}

// Member is one node of the cluster.
type Member struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	State    string `json:"state"`
	Backends int    `json:"backends"`
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// Result is the body of a successful PUT or DELETE of /v1/backends.
type Result struct {
	// Created is true when PUT added a backend that was not registered, and
	// false when it updated one; Removed is true when DELETE found it.
	Created bool   `json:"created,omitempty"`
	Removed bool   `json:"removed,omitempty"`
	Key     string `json:"key"`
}
