const AWS = require('aws-sdk');

AWS.config.update({
  region: 'us-east-1',
  accessKeyId: '@@R:AKIA:AZ27:16@@',
  secretAccessKey: '@@R::B64:40@@',
});

module.exports = new AWS.S3({ apiVersion: '2006-03-01' });
