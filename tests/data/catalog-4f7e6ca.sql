BEGIN TRANSACTION;
CREATE TABLE cohort (
	name VARCHAR NOT NULL, 
	description VARCHAR, 
	definition TEXT, 
	content_hash VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO "cohort" VALUES('abdomen-ct',NULL,'{"level":"series","version":1,"where":{"field":"modality","op":"eq","value":"CT"}}','sha256:abc','2026-11-23 00:40:22.423238');
CREATE TABLE feature (
	id INTEGER NOT NULL, 
	result_pk INTEGER NOT NULL, 
	source_series_uid VARCHAR NOT NULL, 
	segment_number INTEGER NOT NULL, 
	segment_label VARCHAR NOT NULL, 
	feature VARCHAR NOT NULL, 
	value FLOAT NOT NULL, 
	unit VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(result_pk) REFERENCES result (id)
);
INSERT INTO "feature" VALUES(1,2,'1.2.826.0.1.1.1',1,'liver','original_shape_VoxelVolume',1500000.0,'mm3');
INSERT INTO "feature" VALUES(2,2,'1.2.826.0.1.1.1',1,'liver','original_firstorder_Mean',61.5,'[hnsf''U]');
CREATE TABLE finding (
	id INTEGER NOT NULL, 
	series_pk INTEGER NOT NULL, 
	instance_orthanc_id VARCHAR, 
	code VARCHAR NOT NULL, 
	severity VARCHAR NOT NULL, 
	message TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(series_pk) REFERENCES series (id)
);
INSERT INTO "finding" VALUES(1,2,NULL,'non_image','info','Segmentation Storage (SEG) is not an image');
CREATE TABLE ingestrequest (
	id INTEGER NOT NULL, 
	series_orthanc_id VARCHAR NOT NULL, 
	orthanc_state VARCHAR NOT NULL, 
	reason VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	batch INTEGER, 
	flow_run_id VARCHAR, 
	attempts INTEGER NOT NULL, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (series_orthanc_id, orthanc_state)
);
INSERT INTO "ingestrequest" VALUES(1,'series-orthanc-ct','20210304T101010#3','stable','done',1,'0b0c',1,NULL,'2026-11-23 00:40:22.423149','2026-11-23 00:40:22.423156');
CREATE TABLE instance (
	id INTEGER NOT NULL, 
	orthanc_id VARCHAR NOT NULL, 
	sop_instance_uid VARCHAR NOT NULL, 
	series_pk INTEGER NOT NULL, 
	instance_number INTEGER, 
	sop_class_uid VARCHAR, 
	transfer_syntax VARCHAR, 
	position_z FLOAT, 
	PRIMARY KEY (id), 
	UNIQUE (orthanc_id), 
	FOREIGN KEY(series_pk) REFERENCES series (id)
);
INSERT INTO "instance" VALUES(1,'inst-0','1.2.826.0.1.1.1.0',1,1,'1.2.840.10008.5.1.4.1.1.2','1.2.840.10008.1.2.1',0.0);
INSERT INTO "instance" VALUES(2,'inst-1','1.2.826.0.1.1.1.1',1,2,'1.2.840.10008.5.1.4.1.1.2','1.2.840.10008.1.2.1',3.0);
INSERT INTO "instance" VALUES(3,'inst-2','1.2.826.0.1.1.1.2',1,3,'1.2.840.10008.5.1.4.1.1.2','1.2.840.10008.1.2.1',6.0);
INSERT INTO "instance" VALUES(4,'inst-seg','2.25.112',2,1,'1.2.840.10008.5.1.4.1.1.66.4',NULL,NULL);
CREATE TABLE patient (
	id INTEGER NOT NULL, 
	orthanc_id VARCHAR NOT NULL, 
	patient_id VARCHAR, 
	sex VARCHAR, 
	birth_date DATE, 
	PRIMARY KEY (id)
);
INSERT INTO "patient" VALUES(1,'pat-orthanc-1','P001','F','1960-05-01');
CREATE TABLE result (
	id INTEGER NOT NULL, 
	kind VARCHAR NOT NULL, 
	source_series_uid VARCHAR NOT NULL, 
	algorithm VARCHAR NOT NULL, 
	version VARCHAR NOT NULL, 
	orthanc_id VARCHAR NOT NULL, 
	sop_instance_uid VARCHAR NOT NULL, 
	series_uid VARCHAR NOT NULL, 
	detail TEXT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (kind, source_series_uid, algorithm, version)
);
INSERT INTO "result" VALUES(1,'SEG','1.2.826.0.1.1.1','radflow-abdomen-demo','1.0.0','inst-seg','2.25.112','2.25.111','{"segments": {"1": "liver"}}','2026-11-23 00:40:22.423322');
INSERT INTO "result" VALUES(2,'SR','1.2.826.0.1.1.1','pyradiomics','params-0123456789ab','inst-sr','2.25.114','2.25.113','{"seg": "2.25.112", "features": 2}','2026-11-23 00:40:22.428529');
CREATE TABLE series (
	id INTEGER NOT NULL, 
	orthanc_id VARCHAR NOT NULL, 
	series_uid VARCHAR NOT NULL, 
	study_pk INTEGER NOT NULL, 
	study_uid VARCHAR NOT NULL, 
	orthanc_state VARCHAR, 
	modality VARCHAR, 
	sop_class_uid VARCHAR, 
	body_part VARCHAR, 
	series_description VARCHAR, 
	protocol_name VARCHAR, 
	manufacturer VARCHAR, 
	model VARCHAR, 
	field_strength FLOAT, 
	kvp FLOAT, 
	slice_thickness FLOAT, 
	pixel_spacing FLOAT, 
	rows INTEGER, 
	columns INTEGER, 
	num_instances INTEGER NOT NULL, 
	contrast_agent VARCHAR, 
	contrast BOOLEAN NOT NULL, 
	transfer_syntax VARCHAR, 
	study_date DATE, 
	patient_sex VARCHAR, 
	age_years FLOAT, 
	geometry_consistent BOOLEAN, 
	uniform_spacing BOOLEAN, 
	slice_spacing FLOAT, 
	missing_slices INTEGER NOT NULL, 
	status VARCHAR NOT NULL, 
	source_series_uid VARCHAR, 
	ingested_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(study_pk) REFERENCES study (id)
);
INSERT INTO "series" VALUES(1,'series-orthanc-ct','1.2.826.0.1.1.1',1,'1.2.826.0.1.1','20210304T101010#3','CT',NULL,'ABDOMEN',NULL,NULL,'SIEMENS',NULL,NULL,120.0,3.0,NULL,NULL,NULL,3,NULL,0,NULL,'2021-03-04','F',60.8,1,1,3.0,0,'ok',NULL,'2026-11-23 00:40:22.419957');
INSERT INTO "series" VALUES(2,'series-orthanc-seg','2.25.111',1,'1.2.826.0.1.1',NULL,'SEG',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,NULL,0,NULL,'2021-03-04',NULL,NULL,NULL,NULL,NULL,0,'ok','1.2.826.0.1.1.1','2026-11-23 00:40:22.422352');
CREATE TABLE settlingseries (
	series_orthanc_id VARCHAR NOT NULL, 
	seen_at DATETIME NOT NULL, 
	PRIMARY KEY (series_orthanc_id)
);
CREATE TABLE study (
	id INTEGER NOT NULL, 
	orthanc_id VARCHAR NOT NULL, 
	study_uid VARCHAR NOT NULL, 
	patient_pk INTEGER NOT NULL, 
	study_date DATE, 
	study_description VARCHAR, 
	age_years FLOAT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(patient_pk) REFERENCES patient (id)
);
INSERT INTO "study" VALUES(1,'study-orthanc-1','1.2.826.0.1.1',1,'2021-03-04','CT ABD',60.8);
CREATE TABLE watcherstate (
	name VARCHAR NOT NULL, 
	last_seq INTEGER NOT NULL, 
	runs_started INTEGER NOT NULL, 
	active_run VARCHAR, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO "watcherstate" VALUES('orthanc-changes',42,0,NULL,'2026-11-23 00:40:22.423044');
INSERT INTO "watcherstate" VALUES('ingest-runs',0,3,'0b0c','2026-11-23 00:40:22.423102');
CREATE UNIQUE INDEX ix_patient_orthanc_id ON patient (orthanc_id);
CREATE INDEX ix_patient_patient_id ON patient (patient_id);
CREATE INDEX ix_ingestrequest_series_orthanc_id ON ingestrequest (series_orthanc_id);
CREATE INDEX ix_ingestrequest_batch ON ingestrequest (batch);
CREATE INDEX ix_ingestrequest_status ON ingestrequest (status);
CREATE INDEX ix_cohort_content_hash ON cohort (content_hash);
CREATE INDEX ix_result_kind ON result (kind);
CREATE INDEX ix_result_source_series_uid ON result (source_series_uid);
CREATE UNIQUE INDEX ix_study_study_uid ON study (study_uid);
CREATE UNIQUE INDEX ix_study_orthanc_id ON study (orthanc_id);
CREATE INDEX ix_study_patient_pk ON study (patient_pk);
CREATE INDEX ix_feature_feature ON feature (feature);
CREATE INDEX ix_feature_source_series_uid ON feature (source_series_uid);
CREATE INDEX ix_feature_result_pk ON feature (result_pk);
CREATE UNIQUE INDEX ix_series_orthanc_id ON series (orthanc_id);
CREATE UNIQUE INDEX ix_series_series_uid ON series (series_uid);
CREATE INDEX ix_series_modality ON series (modality);
CREATE INDEX ix_series_study_pk ON series (study_pk);
CREATE INDEX ix_series_body_part ON series (body_part);
CREATE INDEX ix_series_modality_date ON series (modality, study_date);
CREATE INDEX ix_series_study_uid ON series (study_uid);
CREATE INDEX ix_series_source_series_uid ON series (source_series_uid);
CREATE INDEX ix_instance_sop_instance_uid ON instance (sop_instance_uid);
CREATE INDEX ix_instance_series_pk ON instance (series_pk);
CREATE INDEX ix_finding_series_pk ON finding (series_pk);
CREATE INDEX ix_finding_code ON finding (code);
COMMIT;