"""Azure's batch quickstart (docs/batch.md), as a user runs it; the same text as the docs."""

import datetime
import json
import os
import time

from openai import AzureOpenAI

with open("test.jsonl", "w") as f:  # three requests to the deployment gpt-4o
    for i, question in enumerate(["When was Microsoft founded?", "What is 2+2?", "Say hi."]):
        body = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 16,
        }
        line = {
            "custom_id": f"task-{i}",
            "method": "POST",
            "url": "/chat/completions",
            "body": body,
        }
        f.write(json.dumps(line) + "\n")

client = AzureOpenAI(
    api_key=os.getenv("AZURE_OPENAI_API_KEY"),
    api_version="2024-10-21",
    azure_endpoint=os.getenv("AZURE_OPENAI_ENDPOINT"),
)

# Upload a file with a purpose of "batch"
file = client.files.create(file=open("test.jsonl", "rb"), purpose="batch")
print(file.model_dump_json(indent=2))
file_id = file.id

# Submit a batch job with the file
batch_response = client.batches.create(
    input_file_id=file_id,
    endpoint="/chat/completions",
    completion_window="24h",
)
batch_id = batch_response.id
print(batch_response.model_dump_json(indent=2))

status = "validating"
while status not in ("completed", "failed", "canceled"):
    time.sleep(1)
    batch_response = client.batches.retrieve(batch_id)
    status = batch_response.status
    print(f"{datetime.datetime.now()} Batch Id: {batch_id},  Status: {status}")

if batch_response.status == "failed":
    for error in batch_response.errors.data:
        print(f"Error code {error.code} Message {error.message}")

output_file_id = batch_response.output_file_id
if not output_file_id:
    output_file_id = batch_response.error_file_id
if output_file_id:
    file_response = client.files.content(output_file_id)
    raw_responses = file_response.text.strip().split("\n")
    for raw_response in raw_responses:
        json_response = json.loads(raw_response)
        formatted_json = json.dumps(json_response, indent=2)
        print(formatted_json)
