package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/vip"
)

// Interface is what the reconciler asks of nf_tables on one node: apply a
// transaction of writes to table inet l4lb, atomically, and read the table
// back. Kernel implements it; Fake implements it in memory.
//
// Apply and Read are called from the sync goroutine only.
type Interface interface {
	// Apply runs ops as one transaction: all of them or none. A failure
	// is a *TxError naming the op (Index) that failed.
	Apply(ops []Op) error
	// Read returns what table inet l4lb holds (Exists false when there is
	// no table).
	Read() (*Ruleset, error)
	// Close releases the handles; the kernel's tables stay.
	Close() error
}

// TableName is the one table l4lb owns, in family inet.
const TableName = "l4lb"

// OpKind is the kind of one write.
type OpKind uint8

// The writes the reconciler makes; each is one netlink message, except
// element writes, which carry up to elementsPerMsg elements per message.
const (
	AddTable OpKind = iota
	AddChain
	DeleteChain
	FlushChain
	AddRule
	AddSet
	DeleteSet
	AddElements
	DeleteElements
	DeleteTable
	numOpKinds
)

var opKindNames = [numOpKinds]string{"add_table", "add_chain", "delete_chain", "flush_chain", "add_rule", "add_set", "delete_set", "add_elements", "delete_elements", "delete_table"}

func (k OpKind) String() string {
	if k < numOpKinds {
		return opKindNames[k]
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// OpKinds lists every kind, in order.
func OpKinds() []OpKind {
	ks := make([]OpKind, numOpKinds)
	for i := range ks {
		ks[i] = OpKind(i)
	}
	return ks
}

// Op is one write to table inet l4lb.
type Op struct {
	Kind OpKind
	// Service is the VIP the write is for; zero for the table's own
	// objects. Errors and logs name it.
	Service vip.ServiceKey
	// Chain for chain kinds and AddRule; Set (with Name only, for
	// DeleteSet and element kinds) for set kinds.
	Chain    Chain
	Set      Set
	Rule     Rule
	Elements []Element
}

// Chain is a chain of the table; Hook is set for the base chains.
type Chain struct {
	Name string
	Hook *Hook
}

// Hook attaches a base chain of type nat to a netfilter hook.
type Hook struct {
	Num      uint32 // NF_INET_*
	Priority int32
}

// Set is a named set or map.
type Set struct {
	Name string
	// KeyType and DataType are nft's datatype numbers (for `nft list`),
	// KeyLen and DataLen the lengths in bytes; DataType verdictType makes
	// a verdict map.
	KeyType, KeyLen   uint32
	DataType, DataLen uint32
	Map               bool
	// Timeout (ms) makes a dynamic set whose elements expire: the
	// affinity maps.
	TimeoutMS uint64
	// HostOrderKey tells `nft list` that the key is in host byte order
	// (the slot numbers).
	HostOrderKey bool
}

// Rule is one rule, appended to Chain; Comment is shown by `nft list` and
// is how a full resync recognises the rule.
type Rule struct {
	Chain   string
	Exprs   []expr.Any
	Comment string
}

// Element is one element of a set or map: Key, and Data (a map's value) or
// Goto (a verdict map's chain).
type Element struct {
	Key  []byte
	Data []byte
	Goto string
}

// Ruleset is what table inet l4lb holds, as Read returns it.
type Ruleset struct {
	Exists bool
	Chains map[string]bool
	// Rules are the comments of each chain's rules, in order.
	Rules map[string][]string
	Sets  map[string]Set
	// Elements of every set except the dynamic ones (affinity maps).
	Elements map[string][]Element
}

// String says what the op does in an operator's words; errors start with it.
func (o Op) String() string {
	svc := ""
	if o.Service.Addr.IsValid() {
		svc = " for " + keyString(o.Service)
	}
	switch o.Kind {
	case AddTable:
		return "add table inet " + TableName
	case DeleteTable:
		return "delete table inet " + TableName
	case AddChain:
		return "add chain " + o.Chain.Name + svc
	case DeleteChain:
		return "delete chain " + o.Chain.Name + svc
	case FlushChain:
		return "flush chain " + o.Chain.Name + svc
	case AddRule:
		return fmt.Sprintf("add rule %q to chain %s%s", o.Rule.Comment, o.Rule.Chain, svc)
	case AddSet:
		return "add set " + o.Set.Name + svc
	case DeleteSet:
		return "delete set " + o.Set.Name + svc
	case AddElements:
		return fmt.Sprintf("add %d elements to %s%s", len(o.Elements), o.Set.Name, svc)
	case DeleteElements:
		return fmt.Sprintf("delete %d elements from %s%s", len(o.Elements), o.Set.Name, svc)
	}
	return o.Kind.String()
}

// keyString prints a service key as ipvsadm does: "TCP 11.0.0.1:80".
func keyString(k vip.ServiceKey) string {
	return strings.ToUpper(string(k.Protocol)) + " " + netip.AddrPortFrom(k.Addr, k.Port).String()
}

// elementsPerMsg bounds the elements of one message: a netlink attribute
// holds at most 64 KiB.
const elementsPerMsg = 256

// nft datatype numbers (nftables' include/datatype.h), for `nft list`.
const (
	typeVerdict     = 1
	typeMark        = 19 // integer-like, host byte order
	typeIPv4        = 7
	typeIPv6        = 8
	typeInetProto   = 12
	typeInetService = 13
	verdictType     = 0xffffff00 // NFT_DATA_VERDICT
)

// concatType is nft's datatype number of a concatenation.
func concatType(types ...uint32) uint32 {
	var t uint32
	for _, x := range types {
		t = t<<6 | x
	}
	return t
}

// messages encodes the ops as netlink messages, and returns for each
// message the index of the op it comes from.
func messages(ops []Op) ([]nlMsg, []int, error) {
	msgs := make([]nlMsg, 0, len(ops))
	owner := make([]int, 0, len(ops))
	add := func(i int, typ, flags uint16, attrs []netlink.Attribute) error {
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return fmt.Errorf("%s: encode: %w", ops[i], err)
		}
		msgs = append(msgs, nlMsg{typ: typ, flags: flags, data: b})
		owner = append(owner, i)
		return nil
	}
	table := netlink.Attribute{Type: unix.NFTA_TABLE_NAME, Data: cstr(TableName)}
	for i, op := range ops {
		var err error
		switch op.Kind {
		case AddTable:
			err = add(i, unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, []netlink.Attribute{table})
		case DeleteTable:
			err = add(i, unix.NFT_MSG_DELTABLE, 0, []netlink.Attribute{table})
		case AddChain:
			attrs := []netlink.Attribute{{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(TableName)}, {Type: unix.NFTA_CHAIN_NAME, Data: cstr(op.Chain.Name)}}
			if h := op.Chain.Hook; h != nil {
				hook, _ := netlink.MarshalAttributes([]netlink.Attribute{
					{Type: unix.NFTA_HOOK_HOOKNUM, Data: be32(h.Num)},
					{Type: unix.NFTA_HOOK_PRIORITY, Data: be32(uint32(h.Priority))},
				})
				attrs = append(attrs,
					netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_CHAIN_HOOK, Data: hook},
					netlink.Attribute{Type: unix.NFTA_CHAIN_TYPE, Data: cstr("nat")},
					netlink.Attribute{Type: unix.NFTA_CHAIN_POLICY, Data: be32(nfAccept)})
			}
			err = add(i, unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, attrs)
		case DeleteChain:
			err = add(i, unix.NFT_MSG_DELCHAIN, 0, []netlink.Attribute{{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(TableName)}, {Type: unix.NFTA_CHAIN_NAME, Data: cstr(op.Chain.Name)}})
		case FlushChain:
			err = add(i, unix.NFT_MSG_DELRULE, 0, []netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: cstr(TableName)}, {Type: unix.NFTA_RULE_CHAIN, Data: cstr(op.Chain.Name)}})
		case AddRule:
			var exprs []netlink.Attribute
			for _, e := range op.Rule.Exprs {
				b, merr := expr.Marshal(unix.NFPROTO_INET, e)
				if merr != nil {
					return nil, nil, fmt.Errorf("%s: encode expression: %w", op, merr)
				}
				exprs = append(exprs, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
			}
			eb, merr := netlink.MarshalAttributes(exprs)
			if merr != nil {
				return nil, nil, merr
			}
			attrs := []netlink.Attribute{
				{Type: unix.NFTA_RULE_TABLE, Data: cstr(TableName)},
				{Type: unix.NFTA_RULE_CHAIN, Data: cstr(op.Rule.Chain)},
				{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: eb},
			}
			if op.Rule.Comment != "" {
				attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_RULE_USERDATA, Data: userdata.AppendString(nil, udataRuleComment, op.Rule.Comment)})
			}
			err = add(i, unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, attrs)
		case AddSet:
			s := op.Set
			flags := uint32(0)
			if s.Map {
				flags |= unix.NFT_SET_MAP
			}
			if s.TimeoutMS > 0 {
				flags |= unix.NFT_SET_TIMEOUT | unix.NFT_SET_EVAL
			}
			attrs := []netlink.Attribute{
				{Type: unix.NFTA_SET_TABLE, Data: cstr(TableName)},
				{Type: unix.NFTA_SET_NAME, Data: cstr(s.Name)},
				{Type: unix.NFTA_SET_FLAGS, Data: be32(flags)},
				{Type: unix.NFTA_SET_KEY_TYPE, Data: be32(s.KeyType)},
				{Type: unix.NFTA_SET_KEY_LEN, Data: be32(s.KeyLen)},
				{Type: unix.NFTA_SET_ID, Data: be32(uint32(i + 1))},
			}
			if s.Map {
				attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_SET_DATA_TYPE, Data: be32(s.DataType)})
				if s.DataType != verdictType {
					attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_SET_DATA_LEN, Data: be32(s.DataLen)})
				}
			}
			if s.TimeoutMS > 0 {
				attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_SET_TIMEOUT, Data: be64(s.TimeoutMS)})
			}
			if s.HostOrderKey {
				attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_SET_USERDATA, Data: userdata.AppendUint32(nil, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, byteorderHost)})
			}
			err = add(i, unix.NFT_MSG_NEWSET, unix.NLM_F_CREATE, attrs)
		case DeleteSet:
			err = add(i, unix.NFT_MSG_DELSET, 0, []netlink.Attribute{{Type: unix.NFTA_SET_TABLE, Data: cstr(TableName)}, {Type: unix.NFTA_SET_NAME, Data: cstr(op.Set.Name)}})
		case AddElements, DeleteElements:
			typ, flags := uint16(unix.NFT_MSG_NEWSETELEM), uint16(unix.NLM_F_CREATE)
			if op.Kind == DeleteElements {
				typ, flags = unix.NFT_MSG_DELSETELEM, 0
			}
			for start := 0; start < len(op.Elements) && err == nil; start += elementsPerMsg {
				end := min(start+elementsPerMsg, len(op.Elements))
				list, eerr := encodeElements(op.Elements[start:end], op.Kind == AddElements)
				if eerr != nil {
					return nil, nil, fmt.Errorf("%s: encode elements: %w", op, eerr)
				}
				err = add(i, typ, flags, []netlink.Attribute{
					{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(TableName)},
					{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(op.Set.Name)},
					{Type: unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_LIST_ELEMENTS, Data: list},
				})
			}
		default:
			err = fmt.Errorf("unknown op kind %d", op.Kind)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return msgs, owner, nil
}

func encodeElements(els []Element, withData bool) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	for _, e := range els {
		ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(unix.NFTA_DATA_VALUE, e.Key)
				return nil
			})
			if !withData {
				return nil
			}
			switch {
			case e.Goto != "":
				ae.Nested(unix.NFTA_SET_ELEM_DATA, func(ae *netlink.AttributeEncoder) error {
					ae.Nested(unix.NFTA_DATA_VERDICT, func(ae *netlink.AttributeEncoder) error {
						ae.Uint32(unix.NFTA_VERDICT_CODE, verdictGoto)
						ae.String(unix.NFTA_VERDICT_CHAIN, e.Goto)
						return nil
					})
					return nil
				})
			case e.Data != nil:
				ae.Nested(unix.NFTA_SET_ELEM_DATA, func(ae *netlink.AttributeEncoder) error {
					ae.Bytes(unix.NFTA_DATA_VALUE, e.Data)
					return nil
				})
			}
			return nil
		})
	}
	return ae.Encode()
}

// nfAccept is NF_ACCEPT, the base chains' policy.
const nfAccept = 1

func cstr(s string) []byte { return append([]byte(s), 0) }

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// udataRuleComment is NFTNL_UDATA_RULE_COMMENT: the rule userdata TLV that
// `nft list` prints as comment.
const udataRuleComment userdata.Type = 0

// verdictGoto is NFT_GOTO (-4) as the kernel reads it: a big-endian u32.
const verdictGoto = 0xfffffffc

// byteorderHost is nft's BYTEORDER_HOST_ENDIAN.
const byteorderHost = 1
