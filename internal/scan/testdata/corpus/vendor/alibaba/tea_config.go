package sms

import (
	openapi "github.com/alibabacloud-go/darabonba-openapi/v2/client"
	"github.com/alibabacloud-go/tea/tea"
)

func config() *openapi.Config {
	return &openapi.Config{
		AccessKeyId:     tea.String("@@R:LTAI:A62:20@@"),
		AccessKeySecret: tea.String("@@R::A62:30@@"),
		Endpoint:        tea.String("dysmsapi.aliyuncs.com"),
	}
}
