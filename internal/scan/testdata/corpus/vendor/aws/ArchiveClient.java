package com.acme.archive;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.services.s3.S3Client;

public final class ArchiveClient {
    // Cold-storage bucket owned by the archive account.
    static S3Client client() {
        return S3Client.builder()
            .credentialsProvider(StaticCredentialsProvider.create(
                AwsBasicCredentials.create("@@R:AKIA:AZ27:16@@", "@@R::B64:40@@")))
            .build();
    }
}
