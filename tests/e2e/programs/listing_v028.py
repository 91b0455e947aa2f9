# The listing calls of openai 0.28.1 against an Azure resource (authoring api-version).
import os

import openai

openai.api_type = "azure"
openai.api_base = os.getenv("AZURE_OPENAI_ENDPOINT")
openai.api_version = "2022-12-01"
openai.api_key = os.getenv("AZURE_OPENAI_KEY")

print("models=" + ",".join(m["id"] for m in openai.Model.list()["data"]))
print("deployments=" + ",".join(d["id"] for d in openai.Deployment.list()["data"]))
one = openai.Deployment.retrieve("gpt-4")
print(f"deployment={one['id']}:{one['model']}")
try:
    openai.Deployment.list(api_version="2024-10-21")
    print("new_version_deployments=listed")
except openai.error.InvalidRequestError as exc:
    print(f"new_version_deployments=InvalidRequestError:{exc.code}")
