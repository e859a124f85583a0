"""Operations on boxes that several rooms share: box maths (:mod:`.boxes`), the box coder (:mod:`.box_coder`),
top-k / decode / hard and soft NMS / undoing the letterbox, and the exportable NMS of the ONNX detection graph
(:mod:`.nms`) in torch; merging the detections of overlapping views (:mod:`.merge`) and sliced inference
(:mod:`.slicing`) in numpy, for the torch-free runtime too."""
