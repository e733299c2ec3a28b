package cloud

import (
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

func newECS() (*ecs.Client, error) {
	return ecs.NewClientWithAccessKey("cn-hangzhou", "@@R:LTAI:A62:20@@", "@@R::A62:30@@")
}
