"""Personal data under control (issue #11 items 4-8): the policy that classifies fields, the value
detectors, pseudonyms, redaction on every ingest path, subject keys, GDPR rights, retention and
the compliance report."""
