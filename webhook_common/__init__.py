"""What ingress and consumers share: the Kafka record contract, config loading, errors.

Neither side imports the other; both import this package. Keep it small.
"""
