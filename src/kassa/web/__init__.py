"""The pages a payer sees (SPEC §10): the hosted checkout and its QR codes."""
