package legacy

import (
	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
)

var sess = session.Must(session.NewSession(&aws.Config{
	Region:      aws.String("us-west-2"),
	Credentials: credentials.NewStaticCredentials("@@R:AKIA:AZ27:16@@", "@@R::B64:40@@", ""),
}))

var backupValue = credentials.Value{
	AccessKeyID:     "@@R:AKIA:AZ27:16@@",
	SecretAccessKey: "@@R::B64:40@@",
}
