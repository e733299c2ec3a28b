package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/cofferkms/coffer/client"
)

// Envelope encryption: a data key encrypts the data locally; only its
// wrapped copy is stored, and Decrypt unwraps it later.
func ExampleClient_GenerateDataKey() {
	c, err := client.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, client.DataKeyRequest{KeyID: "alias/app"})
	if err != nil {
		log.Fatal(err)
	}
	// Encrypt the data with dk.Plaintext (AES-256-GCM, say), then forget it
	// and store dk.Ciphertext beside the data.
	_ = dk.Plaintext

	// Later: unwrap the data key.
	plain, err := c.Decrypt(ctx, client.DecryptRequest{Ciphertext: dk.Ciphertext})
	if err != nil {
		log.Fatal(err)
	}
	_ = plain.Plaintext
}

// Errors from the server carry a stable code.
func ExampleAPIError() {
	c, err := client.New("https://coffer.example.com:8200",
		client.WithToken(os.Getenv("COFFER_TOKEN")),
		client.WithCACertFile("/etc/coffer/ca.pem"),
	)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.DescribeKey(context.Background(), "alias/missing")
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Code == "key_not_found" {
		fmt.Println("no such key")
	}
}

// Batch requests succeed or fail item by item.
func ExampleClient_EncryptBatch() {
	c, err := client.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	resp, err := c.EncryptBatch(context.Background(), client.BatchEncryptRequest{
		KeyID: "alias/app",
		Items: []client.EncryptRequest{
			{Plaintext: []byte("first")},
			{Plaintext: []byte("second"), Context: map[string]string{"tenant": "acme"}},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	for i, r := range resp.Results {
		if r.Error != nil {
			fmt.Printf("item %d: %s: %s\n", i, r.Error.Code, r.Error.Message)
			continue
		}
		fmt.Printf("item %d: %d bytes under %s v%d\n", i, len(r.Ciphertext), r.KeyID, r.KeyVersion)
	}
}
