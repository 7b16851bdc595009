"""Programs that run inside the sandbox beside a sample (copied into its work directory): the HumanEval-X test
harness of each language and MTPB's runner. The Python files here import only the standard library (numpy and
pandas only when a program already imported them); codemill also imports `codec` outside the sandbox to read
what they report."""
