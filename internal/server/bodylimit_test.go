package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// shapeOf measures a valid JSON document with encoding/json: its nesting,
// largest array, largest object and number of elements and members.
func shapeOf(t testing.TB, doc []byte) (depth, arr, obj, values int) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	// Numbers stay text: a valid literal beyond float64's range (found by
	// the fuzzer) is no error of the document.
	dec.UseNumber()
	type frame struct {
		obj bool
		n   int
		key bool // an object expects a key next
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("reference: %v", err)
		}
		if len(stack) > 0 {
			f := &stack[len(stack)-1]
			_, closing := tok.(json.Delim)
			closing = closing && (tok == json.Delim(']') || tok == json.Delim('}'))
			if !closing && (!f.obj || f.key) {
				f.n++
				values++
				if f.obj {
					obj = max(obj, f.n)
				} else {
					arr = max(arr, f.n)
				}
			}
			if f.obj && !closing {
				f.key = !f.key
			}
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			stack = append(stack, frame{obj: tok == json.Delim('{'), key: true})
			depth = max(depth, len(stack))
		case json.Delim(']'), json.Delim('}'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].obj {
				stack[len(stack)-1].key = true
			}
		}
	}
}

func shapeOK(doc []byte) error {
	_, err := io.Copy(io.Discard, &shapeReader{r: bytes.NewReader(doc)})
	return err
}

func checkShape(t *testing.T, doc []byte) {
	if !json.Valid(doc) {
		shapeOK(doc) // must not panic
		return
	}
	depth, arr, obj, values := shapeOf(t, doc)
	within := depth <= MaxJSONDepth && arr <= MaxJSONArray && obj <= MaxJSONObject && values <= MaxJSONValues
	if err := shapeOK(doc); (err == nil) != within {
		t.Fatalf("%.200q: depth %d, array %d, object %d, values %d: shape check says %v", doc, depth, arr, obj, values, err)
	}
}

// TestShapeReaderAgreesWithEncodingJSON: the shape check's verdict on valid
// JSON is exactly what encoding/json's own tokens say, strings with
// brackets, commas and escapes included.
func TestShapeReaderAgreesWithEncodingJSON(t *testing.T) {
	for _, doc := range []string{
		`{}`, `[]`, `{"a":[1,2,3]}`, `{"a":"[,{\"}]"}`, `{"a\\":"\\","b":[{},{}]}`, `"x"`, `1`,
		`{"items":[` + strings.Repeat(`{},`, MaxJSONArray-1) + `{}]}`,
		`{"items":[` + strings.Repeat(`{},`, MaxJSONArray) + `{}]}`,
		`{"items":[` + strings.Repeat(`"a,b",`, MaxJSONArray) + `"x"]}`,
		strings.Repeat(`[`, MaxJSONDepth) + strings.Repeat(`]`, MaxJSONDepth),
		strings.Repeat(`[`, MaxJSONDepth+1) + strings.Repeat(`]`, MaxJSONDepth+1),
		`{` + strings.Repeat(`"k":1,`, MaxJSONObject) + `"k":1}`,
		`{` + strings.Repeat(`"k":1,`, MaxJSONObject-1) + `"k":1}`,
		`[ [ ] , [ ] ]`, "{\n\"a\" : [ ]\t}",
	} {
		checkShape(t, []byte(doc))
	}
}

func FuzzShapeReader(f *testing.F) {
	for _, s := range []string{`{"items":[{},{"context":{"a":"b"}}]}`, `{"a":"\"]"}`, `[[[]]]`, `{"k":[1,"x",null,true]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) { checkShape(t, doc) })
}
