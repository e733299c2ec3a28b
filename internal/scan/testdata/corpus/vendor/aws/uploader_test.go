package uploader

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	os.Setenv("AWS_ACCESS_KEY_ID", "@@R:AKIA:AZ27:16@@")
	os.Setenv("AWS_SECRET_ACCESS_KEY", "@@R::B64:40@@")
	os.Setenv("AWS_REGION", "eu-central-1")
	os.Exit(m.Run())
}
