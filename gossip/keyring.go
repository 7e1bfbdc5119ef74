package gossip

import (
	"errors"
	"fmt"
)

// ErrNotEncrypted is returned by the key methods of a cluster started
// without a key: encryption cannot be switched on in a running cluster.
var ErrNotEncrypted = errors.New("gossip is not encrypted: start with a key to rotate keys")

// Key rotation, done on every node in three rounds, each finished on all
// nodes before the next starts:
//
//  1. InstallKey(new): every node can now decrypt messages under new.
//  2. UseKey(new): every node encrypts with new; old still decrypts
//     messages from nodes that have not switched yet.
//  3. RemoveKey(old): old no longer decrypts anything.
//
// The keys live in memberlist's keyring and take effect at once for every
// packet and stream after the call.

// InstallKey adds key to the keyring, for decryption only.
func (c *Cluster) InstallKey(key []byte) error {
	if c.keyring == nil {
		return ErrNotEncrypted
	}
	if err := c.keyring.AddKey(key); err != nil {
		return fmt.Errorf("install gossip key: %w", err)
	}
	c.log.WithField("keys", len(c.keyring.GetKeys())).Info("gossip key installed")
	return nil
}

// UseKey makes an installed key the one that encrypts.
func (c *Cluster) UseKey(key []byte) error {
	if c.keyring == nil {
		return ErrNotEncrypted
	}
	if err := c.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use gossip key: %w", err)
	}
	c.log.Info("gossip primary key changed")
	return nil
}

// RemoveKey removes a key that is not the primary one.
func (c *Cluster) RemoveKey(key []byte) error {
	if c.keyring == nil {
		return ErrNotEncrypted
	}
	if err := c.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("remove gossip key: %w", err)
	}
	c.log.WithField("keys", len(c.keyring.GetKeys())).Info("gossip key removed")
	return nil
}

// Keys returns the installed keys, the primary one first; nil when gossip
// is not encrypted.
func (c *Cluster) Keys() [][]byte {
	if c.keyring == nil {
		return nil
	}
	return c.keyring.GetKeys()
}
