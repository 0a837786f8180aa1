"""Local stand-ins for third-party SaaS (Exotel, OpenAI, the recording server): tests and local runs."""
