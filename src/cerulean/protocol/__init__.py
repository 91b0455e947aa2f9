"""Wire schemas (pydantic), named after Azure's OpenAPI spec."""
