package dockerproxy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// A create body is edited in place: the edits name spans of the body and
// what goes there, and every other byte is passed on as the client sent
// it (key order, keys given twice, unknown fields, number formats,
// escapes), so that dockerd reads what it would have read without the
// proxy but for what the edits set. Nothing is decoded into maps and
// encoded again.

// span is a part of the body: [start, end).
type span struct{ start, end int }

// patch replaces a span of the body with text (an insertion when the span
// is empty).
type patch struct {
	at   span
	text []byte
}

// applyPatches returns body with patches applied. Patches do not overlap;
// insertions at one place go in the order given.
func applyPatches(body []byte, patches []patch) ([]byte, error) {
	sorted := slices.Clone(patches)
	slices.SortStableFunc(sorted, func(a, b patch) int { return a.at.start - b.at.start })
	out := make([]byte, 0, len(body)+256)
	at := 0
	for _, p := range sorted {
		if p.at.start < at {
			return nil, fmt.Errorf("overlapping edits at byte %d", p.at.start)
		}
		out = append(out, body[at:p.at.start]...)
		out = append(out, p.text...)
		at = p.at.end
	}
	return append(out, body[at:]...), nil
}

// The scanner below reads valid JSON only (the body is checked with
// json.Valid first): it finds where values begin and end, nothing more.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// valueEnd is the end of the value that begins at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[j])) {
		j++
	}
	return j
}

// stringEnd is the end of the string that begins at b[i] (its quote).
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// member is one key of an object and its value, as sent.
type member struct {
	key   string // decoded
	value span
}

// objectMembers lists the members of the object at s, in order, each
// time it is sent.
func objectMembers(b []byte, s span) []member {
	var ms []member
	i := skipSpace(b, s.start+1)
	for i < s.end && b[i] == '"' {
		keyEnd := stringEnd(b, i)
		var key string
		json.Unmarshal(b[i:keyEnd], &key)        // a valid string always decodes
		i = skipSpace(b, skipSpace(b, keyEnd)+1) // past the colon
		end := valueEnd(b, i)
		ms = append(ms, member{key: key, value: span{i, end}})
		i = skipSpace(b, end)
		if i < s.end && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return ms
}

// arrayElements lists the elements of the array at s.
func arrayElements(b []byte, s span) []span {
	var es []span
	i := skipSpace(b, s.start+1)
	for i < s.end && b[i] != ']' {
		end := valueEnd(b, i)
		es = append(es, span{i, end})
		i = skipSpace(b, end)
		if i < s.end && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return es
}

// kindOf is what the value at s is, for errors and checks: '{', '[', '"',
// 'n' (null), 't'/'f', or a digit or '-'.
func kindOf(b []byte, s span) byte { return b[s.start] }

func isNull(b []byte, s span) bool { return string(b[s.start:s.end]) == "null" }
