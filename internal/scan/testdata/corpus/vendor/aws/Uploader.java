package com.acme.reports;

import com.amazonaws.auth.AWSStaticCredentialsProvider;
import com.amazonaws.auth.BasicAWSCredentials;
import com.amazonaws.services.s3.AmazonS3;
import com.amazonaws.services.s3.AmazonS3ClientBuilder;

public class Uploader {
    private final AmazonS3 s3 = AmazonS3ClientBuilder.standard()
            .withRegion("eu-west-1")
            .withCredentials(new AWSStaticCredentialsProvider(
                    new BasicAWSCredentials("@@R:AKIA:AZ27:16@@", "@@R::B64:40@@")))
            .build();
}
