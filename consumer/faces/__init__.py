"""Face collections that the whole fleet shares, in the shape of Amazon Rekognition's: faces
indexed once (`consumer.faces.collections`, a DynamoDB table and `.npy` embeddings in S3),
searched by every consumer in memory (`consumer.faces.search`), managed with
`kvs-analytics faces` (`consumer.faces.cli`); their names, records and errors in
`consumer.faces.records`."""
