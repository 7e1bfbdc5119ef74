package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var _ Interface = (*Kernel)(nil)

// Kernel is the real Interface: nf_tables netlink in one network namespace.
type Kernel struct {
	nl *nlConn

	mu       sync.Mutex // guards counters
	counters Counters
}

// Counters count what Kernel sent: transactions, netlink messages, set
// elements written, and dump requests.
type Counters struct {
	Transactions, Messages, Elements, Dumps uint64
}

// OpenKernel opens nf_tables in the namespace at nsPath ("" for the
// caller's) and checks that it works: a kernel without nf_tables fails with
// ErrNoNFTables.
func OpenKernel(nsPath string, timeout time.Duration) (*Kernel, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	c, err := openNL(nsPath, timeout)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoNFTables, err)
	}
	k := &Kernel{nl: c}
	// A dump of the tables proves the subsystem answers.
	if _, err := c.dump(unix.NFT_MSG_GETTABLE, unix.NLM_F_DUMP, nil, unix.NFT_MSG_NEWTABLE); err != nil {
		c.close()
		return nil, fmt.Errorf("%w: list tables: %v", ErrNoNFTables, err)
	}
	return k, nil
}

// ErrNoNFTables is returned by New and OpenKernel when the kernel has no
// nf_tables.
var ErrNoNFTables = errors.New("nf_tables is not available in this kernel (CONFIG_NF_TABLES, nft_nat, nf_conntrack): load nf_tables or use the ipvs data plane")

// Apply runs ops as one transaction.
func (k *Kernel) Apply(ops []Op) error {
	msgs, owner, err := messages(ops)
	if err != nil {
		return err
	}
	elems := 0
	for _, op := range ops {
		elems += len(op.Elements)
	}
	err = k.nl.transact(msgs)
	k.mu.Lock()
	k.counters.Transactions++
	k.counters.Messages += uint64(len(msgs))
	k.counters.Elements += uint64(elems)
	k.mu.Unlock()
	var te *TxError
	if errors.As(err, &te) && te.Index >= 0 {
		te.Index = owner[te.Index]
		return fmt.Errorf("%s: %w", ops[te.Index], te)
	}
	return err
}

// Counters returns what was sent so far.
func (k *Kernel) Counters() Counters {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.counters
}

// Close closes the socket.
func (k *Kernel) Close() error { return k.nl.close() }

func (k *Kernel) dump(typ uint16, flags uint16, attrs []netlink.Attribute, want uint16) ([][]byte, error) {
	var data []byte
	if len(attrs) > 0 {
		var err error
		if data, err = netlink.MarshalAttributes(attrs); err != nil {
			return nil, err
		}
	}
	k.mu.Lock()
	k.counters.Dumps++
	k.mu.Unlock()
	return k.nl.dump(typ, flags, data, want)
}

// Read reads table inet l4lb back: chains, rules (their comments), sets,
// and the elements of every set but the dynamic ones.
func (k *Kernel) Read() (*Ruleset, error) {
	rs := &Ruleset{Chains: map[string]bool{}, Rules: map[string][]string{}, Sets: map[string]Set{}, Elements: map[string][]Element{}}
	_, err := k.dump(unix.NFT_MSG_GETTABLE, 0, []netlink.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: cstr(TableName)}}, unix.NFT_MSG_NEWTABLE)
	if errors.Is(err, unix.ENOENT) {
		return rs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read table inet %s: %w", TableName, err)
	}
	rs.Exists = true
	chains, err := k.dump(unix.NFT_MSG_GETCHAIN, unix.NLM_F_DUMP, []netlink.Attribute{{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(TableName)}}, unix.NFT_MSG_NEWCHAIN)
	if err != nil {
		return nil, fmt.Errorf("list chains of inet %s: %w", TableName, err)
	}
	for _, b := range chains {
		if t, name := attrStrings(b, unix.NFTA_CHAIN_TABLE, unix.NFTA_CHAIN_NAME); t == TableName {
			rs.Chains[name] = true
		}
	}
	rules, err := k.dump(unix.NFT_MSG_GETRULE, unix.NLM_F_DUMP, []netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: cstr(TableName)}}, unix.NFT_MSG_NEWRULE)
	if err != nil {
		return nil, fmt.Errorf("list rules of inet %s: %w", TableName, err)
	}
	for _, b := range rules {
		var table, chain, comment string
		ad, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_TABLE:
				table = ad.String()
			case unix.NFTA_RULE_CHAIN:
				chain = ad.String()
			case unix.NFTA_RULE_USERDATA:
				comment, _ = userdata.GetString(ad.Bytes(), udataRuleComment)
			}
		}
		if table == TableName {
			rs.Rules[chain] = append(rs.Rules[chain], comment)
		}
	}
	sets, err := k.dump(unix.NFT_MSG_GETSET, unix.NLM_F_DUMP, []netlink.Attribute{{Type: unix.NFTA_SET_TABLE, Data: cstr(TableName)}}, unix.NFT_MSG_NEWSET)
	if err != nil {
		return nil, fmt.Errorf("list sets of inet %s: %w", TableName, err)
	}
	for _, b := range sets {
		var s Set
		var table string
		var flags uint32
		ad, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			return nil, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_TABLE:
				table = ad.String()
			case unix.NFTA_SET_NAME:
				s.Name = ad.String()
			case unix.NFTA_SET_FLAGS:
				flags = ad.Uint32()
			case unix.NFTA_SET_KEY_TYPE:
				s.KeyType = ad.Uint32()
			case unix.NFTA_SET_KEY_LEN:
				s.KeyLen = ad.Uint32()
			case unix.NFTA_SET_DATA_TYPE:
				s.DataType = ad.Uint32()
			case unix.NFTA_SET_DATA_LEN:
				s.DataLen = ad.Uint32()
			case unix.NFTA_SET_TIMEOUT:
				s.TimeoutMS = ad.Uint64()
			}
		}
		s.Map = flags&unix.NFT_SET_MAP != 0
		if table != TableName {
			continue
		}
		rs.Sets[s.Name] = s
		if s.TimeoutMS > 0 {
			continue // the affinity maps: what clients wrote, not l4lb
		}
		els, err := k.readElements(s.Name)
		if err != nil {
			return nil, err
		}
		rs.Elements[s.Name] = els
	}
	return rs, nil
}

func (k *Kernel) readElements(set string) ([]Element, error) {
	msgs, err := k.dump(unix.NFT_MSG_GETSETELEM, unix.NLM_F_DUMP, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(TableName)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
	}, unix.NFT_MSG_NEWSETELEM)
	if err != nil {
		return nil, fmt.Errorf("list elements of %s: %w", set, err)
	}
	var out []Element
	for _, b := range msgs {
		els, err := decodeElements(b)
		if err != nil {
			return nil, fmt.Errorf("decode elements of %s: %w", set, err)
		}
		out = append(out, els...)
	}
	return out, nil
}

// decodeElements decodes the elements of one NEWSETELEM message.
func decodeElements(b []byte) ([]Element, error) {
	var out []Element
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(nd *netlink.AttributeDecoder) error {
			for nd.Next() {
				if nd.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				var e Element
				nd.Nested(func(ed *netlink.AttributeDecoder) error {
					for ed.Next() {
						switch ed.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							ed.Nested(func(vd *netlink.AttributeDecoder) error {
								for vd.Next() {
									if vd.Type() == unix.NFTA_DATA_VALUE {
										e.Key = vd.Bytes()
									}
								}
								return nil
							})
						case unix.NFTA_SET_ELEM_DATA:
							ed.Nested(func(vd *netlink.AttributeDecoder) error {
								for vd.Next() {
									switch vd.Type() {
									case unix.NFTA_DATA_VALUE:
										e.Data = vd.Bytes()
									case unix.NFTA_DATA_VERDICT:
										vd.Nested(func(xd *netlink.AttributeDecoder) error {
											for xd.Next() {
												if xd.Type() == unix.NFTA_VERDICT_CHAIN {
													e.Goto = xd.String()
												}
											}
											return nil
										})
									}
								}
								return nil
							})
						}
					}
					return nil
				})
				out = append(out, e)
			}
			return nil
		})
	}
	return out, ad.Err()
}

// attrStrings returns the string attributes a and b of a message body.
func attrStrings(body []byte, a, b uint16) (string, string) {
	ad, err := netlink.NewAttributeDecoder(body)
	if err != nil {
		return "", ""
	}
	var x, y string
	for ad.Next() {
		switch ad.Type() {
		case a:
			x = ad.String()
		case b:
			y = ad.String()
		}
	}
	return x, y
}
