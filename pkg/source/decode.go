package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is wrapped by the errors of Decode and of the services
// directory when the input is larger than allowed.
var ErrTooLarge = errors.New("too large")

// Decode reads one Entry, a JSON object, from r, reading at most max bytes:
// a longer input is an error wrapping ErrTooLarge. Unknown fields, anything
// after the object, and values of the wrong type are errors that name the
// field. Decode does not Parse the Entry.
func Decode(r io.Reader, max int64) (Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return Entry{}, fmt.Errorf("read registration: %w", err)
	}
	if int64(len(data)) > max {
		return Entry{}, fmt.Errorf("registration: longer than %d bytes: %w", max, ErrTooLarge)
	}
	e, err := decodeEntry(data)
	if err != nil {
		return Entry{}, fmt.Errorf("registration: %w", err)
	}
	return e, nil
}

// DecodeServicesFile reads the content of one services-directory file: a
// single Entry, a JSON array of Entries, or {"backends": [Entries]}. An empty
// file is an error (it is often a file being written); "[]" and
// {"backends": []} declare no backends. Each Entry is decoded as strictly as
// Decode does; the error names the entry by its index.
func DecodeServicesFile(data []byte) ([]Entry, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("empty file")
	}
	switch trimmed[0] {
	case '[':
		return decodeEntries(trimmed)
	case '{':
	default:
		return nil, errors.New("want a JSON object or array")
	}
	var fields map[string]json.RawMessage
	if err := decodeStrict(trimmed, &fields); err != nil {
		return nil, err
	}
	backends, wrapped := fields["backends"]
	if !wrapped {
		e, err := decodeEntry(trimmed)
		if err != nil {
			return nil, err
		}
		return []Entry{e}, nil
	}
	for name := range fields {
		if name != "backends" {
			return nil, fmt.Errorf("unknown field %q beside \"backends\"", name)
		}
	}
	if t := bytes.TrimSpace(backends); len(t) == 0 || t[0] != '[' {
		return nil, errors.New("\"backends\": want an array")
	}
	entries, err := decodeEntries(backends)
	if err != nil {
		return nil, fmt.Errorf("\"backends\": %w", err)
	}
	return entries, nil
}

// decodeEntries decodes a JSON array of Entries.
func decodeEntries(data []byte) ([]Entry, error) {
	var raws []json.RawMessage
	if err := decodeStrict(data, &raws); err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(raws))
	for i, raw := range raws {
		e, err := decodeEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// decodeEntry decodes one Entry, which must be a JSON object.
func decodeEntry(data []byte) (Entry, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return Entry{}, errors.New("empty; want a JSON object")
	}
	if trimmed[0] != '{' {
		return Entry{}, errors.New("want a JSON object")
	}
	var e Entry
	if err := decodeStrict(trimmed, &e); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// decodeStrict decodes exactly one JSON value from data into v, refusing
// unknown fields and anything after the value.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// jsonError rewrites encoding/json's errors to name the field and say what
// was wanted, without the "json: " prefix.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field != "" {
			return fmt.Errorf("%s: a JSON %s cannot be a %s", typeErr.Field, typeErr.Value, typeErr.Type)
		}
		return fmt.Errorf("a JSON %s cannot be a %s", typeErr.Value, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("invalid JSON at byte %d: %s", syntaxErr.Offset, syntaxErr.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("invalid JSON: ends too early")
	}
	return errors.New(trimJSONPrefix(err.Error()))
}

func trimJSONPrefix(s string) string {
	const prefix = "json: "
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}
