package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/dbproxy/dbproxy/internal/model"
)

// replacement is U+FFFD, what encoding/json puts in place of invalid
// UTF-8 and of unpaired UTF-16 surrogate escapes.
const replacement = "\uFFFD"

// checkJSON walks a request body token by token before it is decoded,
// refusing what encoding/json accepts silently: a repeated object key
// (it keeps the last, so that two readers of one body can disagree about
// it, and policies already refuse them) and text that is not valid UTF-8
// or holds an unpaired surrogate escape (it becomes U+FFFD, so that what is
// stored is not what was sent). encoding/json has no option for either
// (encoding/json/v2 refuses both, but is an experiment in this Go), so the
// walk is written here on top of json.Decoder's tokenizer. It returns the
// JSON paths ("connection_pool_config.max_connections_percent") of the
// numbers that are literally zero, for the fields where 0 is not a value
// but also is what an absent field decodes to. A syntax error is left to
// the decode that follows, which reports it with its offset.
func checkJSON(body []byte) (zeros map[string]bool, e *model.Error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	// One frame per open object or array: the path to it, and the keys
	// seen or the next index.
	type frame struct {
		path   string
		object bool
		seen   map[string]bool
		key    string // the key whose value comes next; "" before a key
		index  int
	}
	var stack []*frame
	// valuePath is the path of the value the next token starts.
	valuePath := func() string {
		if len(stack) == 0 {
			return ""
		}
		f := stack[len(stack)-1]
		if f.object {
			return joinPath(f.path, f.key)
		}
		return fmt.Sprintf("%s[%d]", f.path, f.index)
	}
	// afterValue moves the innermost container past a complete value.
	afterValue := func() {
		if len(stack) == 0 {
			return
		}
		f := stack[len(stack)-1]
		if f.object {
			f.key = ""
		} else {
			f.index++
		}
	}
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return zeros, nil
		}
		if err != nil {
			return zeros, nil // a syntax error: the decoder reports it
		}
		raw := body[start:dec.InputOffset()]
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				stack = append(stack, &frame{path: valuePath(), object: t == '{', seen: map[string]bool{}})
			case '}', ']':
				stack = stack[:len(stack)-1]
				afterValue()
			}
		case string:
			if top != nil && top.object && top.key == "" {
				// An object key.
				field := joinPath(top.path, t)
				if replaced(raw, t) {
					return nil, badText(field, "name")
				}
				if top.seen[t] {
					return nil, errBadRequest(field, "appears more than once in the object; give each field once")
				}
				top.seen[t] = true
				top.key = t
				continue
			}
			if replaced(raw, t) {
				return nil, badText(valuePath(), "value")
			}
			afterValue()
		case json.Number:
			if f, err := strconv.ParseFloat(string(t), 64); err == nil && f == 0 {
				if zeros == nil {
					zeros = map[string]bool{}
				}
				zeros[valuePath()] = true
			}
			afterValue()
		default: // bool, nil
			afterValue()
		}
	}
}

// replaced reports whether decoding raw, the text of one JSON string
// token (perhaps after a delimiter), replaced something with U+FFFD: the
// decoded s holds more of them than raw spells out, literally or as a
// \uFFFD escape.
func replaced(raw []byte, s string) bool {
	n := strings.Count(s, replacement)
	if n == 0 {
		return false
	}
	spelled := 0
	for i := 0; i < len(raw); i++ {
		switch {
		case raw[i] == '\\' && i+1 < len(raw) && raw[i+1] == 'u':
			if i+6 <= len(raw) && strings.EqualFold(string(raw[i+2:i+6]), "fffd") {
				spelled++
			}
			i++ // past the u; the hex digits are no escape
		case raw[i] == '\\':
			i++ // past the escaped character, a backslash included
		case bytes.HasPrefix(raw[i:], []byte(replacement)):
			spelled++
		}
	}
	return n > spelled
}

// badText names the field whose name or value is not valid text.
func badText(field, what string) *model.Error {
	const problem = "is not valid UTF-8 (or holds an unpaired \\uD800-\\uDFFF escape); send UTF-8 text"
	if field == "" {
		return &model.Error{Status: http.StatusBadRequest, Code: "MalformedJSON", Message: "the body " + problem}
	}
	return errBadRequest(field, "the field's %s %s", what, problem)
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
