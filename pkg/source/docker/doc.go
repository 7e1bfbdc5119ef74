// Package docker is the backend source for containers on the local Docker
// engine: it lists the running containers that carry l4lb labels
// (l4lb.vip.<port>=<VIP spec>, see ParseLabels), follows the engine's
// events, and turns each labelled port into a source.Local whose backend is
// the address other nodes reach it at (a published port, host networking,
// or a container address on a routable network).
//
// It talks to the engine only through the Docker Engine API client library
// (github.com/moby/moby/client). It does not publish anything, run health
// checks, or merge its set with the other sources': the agent does. It
// carries Docker's own HEALTHCHECK verdict (Backend.Health,
// Source.DockerHealth) for the agent to apply, and says which keys a
// container owns (Source.Owner) so that the API can refuse to deregister
// them.
package docker
