# mmdet RetinaNet for the embedded digits_det set (64x64 grey canvases, 10 digit classes).
# ResNet-18 depth at a quarter of the widths (16-128 channels), FPN on C3-C5 with P6/P7 from
# stride-2 convs on C5 (mmdet's add_extra_convs='on_input', as retinanet_r18_fpn_1x_coco.py),
# 32-channel FPN and two-conv head towers; anchors start at 16 px on P3 (digits are 7-22 px tall).
# The test pipeline reads each canvas as a grey uint8 image at its own size (no resize).
model = dict(
    type="RetinaNet",
    data_preprocessor=dict(
        type="DetDataPreprocessor", mean=[33.3285], std=[78.5655], bgr_to_rgb=False, pad_size_divisor=32
    ),
    backbone=dict(
        type="ResNet",
        depth=18,
        in_channels=1,
        base_channels=16,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=True,
        style="pytorch",
        # mmdet's default zero-inits each block's last BN: folded, that makes a random-init block's
        # last conv all zeros, so sparsifying it would be meaningless
        zero_init_residual=False,
        init_cfg=None,
    ),
    neck=dict(
        type="FPN", in_channels=[32, 64, 128], out_channels=32, start_level=0, add_extra_convs="on_input", num_outs=5
    ),
    bbox_head=dict(
        type="RetinaHead",
        num_classes=10,
        in_channels=32,
        stacked_convs=2,
        feat_channels=32,
        anchor_generator=dict(
            type="AnchorGenerator",
            octave_base_scale=2,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128],
        ),
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type="L1Loss", loss_weight=1.0),
    ),
    train_cfg=dict(
        assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        sampler=dict(type="PseudoSampler"),
        allowed_border=-1,
        pos_weight=-1,
        debug=False,
    ),
    test_cfg=dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100
    ),
)

test_pipeline = [
    dict(type="LoadImageFromFile", color_type="grayscale"),
    dict(type="Resize", scale=(64, 64), keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
