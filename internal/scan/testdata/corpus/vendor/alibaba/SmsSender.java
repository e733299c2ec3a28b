package com.acme.notify;

import com.aliyuncs.DefaultAcsClient;
import com.aliyuncs.IAcsClient;
import com.aliyuncs.profile.DefaultProfile;

public class SmsSender {
    private final IAcsClient client;

    public SmsSender() {
        DefaultProfile profile = DefaultProfile.getProfile("cn-shanghai", "@@R:LTAI:A62:16@@", "@@R::A62:30@@");
        this.client = new DefaultAcsClient(profile);
    }
}
