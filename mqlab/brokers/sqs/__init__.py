"""SQS and SNS: the interface (``api``) and the real adapter on boto3 (``client``).

Importing this package imports no client library; ``client`` does.
"""
