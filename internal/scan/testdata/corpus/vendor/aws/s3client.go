package storage

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// newClient talks to the reports bucket with the uploader's own key.
func newClient(ctx context.Context) (*s3.Client, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion("eu-central-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("@@R:AKIA:AZ27:16@@", "@@R::B64:40@@", "")),
	)
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(cfg), nil
}

func fixedCreds() aws.Credentials {
	return aws.Credentials{
		AccessKeyID:     "@@R:AKIA:AZ27:16@@",
		SecretAccessKey: "@@R::B64:40@@",
		Source:          "hardcoded",
	}
}
