package awskms

import (
	"fmt"
	"strings"
)

// Config names the AWS account Coffer's keys appear in: the partition,
// region and account of their ARNs (arn:PARTITION:kms:REGION:ACCOUNT:key/ID)
// and the region clients must sign for.
type Config struct {
	Partition string `json:"partition"` // default "aws"
	Region    string `json:"region"`    // default "us-east-1"
	Account   string `json:"account"`   // default "000000000000"
}

// WithDefaults fills the zero fields of c.
func (c Config) WithDefaults() Config {
	if c.Partition == "" {
		c.Partition = "aws"
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.Account == "" {
		c.Account = "000000000000"
	}
	return c
}

// KeyARN is the ARN of key id.
func (c Config) KeyARN(id string) string {
	return "arn:" + c.Partition + ":kms:" + c.Region + ":" + c.Account + ":key/" + id
}

// AliasARN is the ARN of alias name (alias/NAME).
func (c Config) AliasARN(name string) string {
	return "arn:" + c.Partition + ":kms:" + c.Region + ":" + c.Account + ":" + name
}

// Ref turns a KeyId as AWS clients send it (a key id, alias/NAME, or the
// ARN of either) into a Coffer key reference (id or alias/NAME). An ARN
// must name this server's partition, region and account.
func (c Config) Ref(keyID string) (string, error) {
	if !strings.HasPrefix(keyID, "arn:") {
		return keyID, nil
	}
	parts := strings.SplitN(keyID, ":", 6)
	if len(parts) != 6 || parts[2] != Service {
		return "", fmt.Errorf("%q is not a KMS ARN (arn:PARTITION:kms:REGION:ACCOUNT:key/ID or ...:alias/NAME)", truncate(keyID))
	}
	if parts[1] != c.Partition || parts[3] != c.Region || parts[4] != c.Account {
		return "", fmt.Errorf("the ARN %q is not of this server's partition, region and account (%s, %s, %s)", truncate(keyID), c.Partition, c.Region, c.Account)
	}
	res := parts[5]
	if id, ok := strings.CutPrefix(res, "key/"); ok && id != "" {
		return id, nil
	}
	if strings.HasPrefix(res, "alias/") && len(res) > len("alias/") {
		return res, nil
	}
	return "", fmt.Errorf("the ARN %q names neither key/ID nor alias/NAME", truncate(keyID))
}
