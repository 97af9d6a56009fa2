"""Local servers that speak the wire protocols of Salesforce, Twilio and the SendGrid API, for the demo and the tests.

Production code never imports this package: destinations use the real SDKs pointed at these servers by URL.
"""
