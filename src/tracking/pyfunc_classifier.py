"""The code of every logged classifier (MLflow "models from code"): `tracking.log_model` stores
this file in the model, beside the pickled torch module (artifact `module`) and the mlproject
package (code_paths). MLflow runs it when the model is loaded (`mlflow.pyfunc.load_model`,
`mlflow models serve`); nothing imports it as a module.

    predict(float32 images in [0, 1], (N, C, H, W) like the training data as stored)
      -> DataFrame, one row per image: label (class name), label_index, confidence (its
         probability), then p_<class name> for every class in class order (they sum to 1)
"""
import numpy as np
import pandas as pd
import torch
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

BATCH = 256  # images per forward pass: bounded memory for large requests


class ImageClassifier(PythonModel):
    def load_context(self, context):
        self.module = torch.load(context.artifacts["module"], map_location="cpu", weights_only=False).eval()
        self.class_names = [str(c) for c in context.model_config["class_names"]]

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        # typed np.ndarray: MLflow then checks the input against the signature alone
        x = model_input
        if isinstance(x, dict):  # a named tensor: {"images": array}
            (x,) = x.values()
        if isinstance(x, pd.DataFrame):
            x = np.stack([np.asarray(v, dtype=np.float32) for v in x.iloc[:, 0]])
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        with torch.no_grad():
            probs = torch.cat([self.module(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]) if len(x) else \
                torch.zeros(0, len(self.class_names))
        probs = probs.float().numpy()
        idx = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
        frame = pd.DataFrame({"label": [self.class_names[i] for i in idx], "label_index": idx.astype(np.int64),
                              "confidence": probs[np.arange(len(idx)), idx].astype(np.float32)})
        columns = pd.DataFrame(probs, columns=[f"p_{c}" for c in self.class_names])
        return pd.concat([frame, columns], axis=1)


set_model(ImageClassifier())
