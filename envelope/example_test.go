package envelope_test

import (
	"bytes"
	"fmt"
	"io"
	"log"

	"github.com/cofferkms/coffer/envelope"
)

// Encrypt a file and decrypt it again. In production the wrapper is
// envelope.NewCoffer(client, "alias/backups"), usually behind a
// CachingWrapper; a local key keeps the example self-contained.
func Example() {
	key, err := envelope.GenerateLocalKey("example")
	if err != nil {
		log.Fatal(err)
	}
	var file bytes.Buffer
	w, err := envelope.Encrypt(&file, key, &envelope.EncryptOptions{
		EncryptionContext: map[string]string{"bucket": "invoices"},
	})
	if err != nil {
		log.Fatal(err)
	}
	io.WriteString(w, "a large file")
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	hdr, _ := envelope.ReadHeader(bytes.NewReader(file.Bytes()))
	fmt.Println(hdr.Stanzas[0].Type, hdr.Stanzas[0].KeyID, hdr.EncryptionContext)

	r, err := envelope.Decrypt(&file, key)
	if err != nil {
		log.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err) // the file was truncated or altered
	}
	fmt.Println(string(plain))
	// Output:
	// local example map[bucket:invoices]
	// a large file
}
