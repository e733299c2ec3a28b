package com.acme.storage;

import com.aliyun.teaopenapi.models.Config;

final class Client {
    static Config config() {
        return new Config()
                .setAccessKeyId("@@R:LTAI:A62:20@@")
                .setAccessKeySecret("@@R::A62:30@@")
                .setEndpoint("ecs.cn-hangzhou.aliyuncs.com");
    }
}
