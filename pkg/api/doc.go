// Package api is l4lb's local HTTP API (on --api-listen, 127.0.0.1:62080 by
// default) and its client: the server side over the narrow Agent interface,
// the JSON views it serves, the client the CLI uses, and the rendering of
// those views for people (`l4lb vips`, `l4lb members`).
//
// It owns no state: it asks the agent, and hands registrations to it.
package api
