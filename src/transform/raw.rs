//! Raw streams as tables: the landed NDJSON files a model reads (all of them, or only those the
//! model has not consumed yet), decoded with one schema inferred across the files (a field that
//! appears later or widens does not fail), plus `_partition`, `_window_start`, `_window_end`,
//! `_file`, `_landed_at` and `_ingest_order` (landing order, then line) columns. Scanned by
//! DataFusion as the plan runs ([`RawTable`]): files are decoded one at a time per core, only
//! the columns a model uses.
use crate::error::{Error, Result};
use crate::lake::state::LandedFile;
use crate::lake::Lake;
use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::catalog::{Session, TableProvider};
use deltalake::datafusion::common::tree_node::TreeNodeRecursion;
use deltalake::datafusion::common::{DataFusionError, Result as DfResult};
use deltalake::datafusion::datasource::TableType;
use deltalake::datafusion::execution::TaskContext;
use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use deltalake::datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use deltalake::datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use std::collections::BTreeMap;
use std::io::{BufReader, Cursor};
use std::sync::Arc;

/// `raw.<source>_<stream>`
pub fn table_name(source: &str, stream: &str) -> String {
    format!("raw.{source}_{stream}")
}

/// Current landed files per raw table name (the latest landing of each slot: a re-pulled
/// window supersedes the earlier file), in landing order.
pub fn streams(rows: &[LandedFile]) -> BTreeMap<String, Vec<LandedFile>> {
    let mut out: BTreeMap<String, Vec<LandedFile>> = BTreeMap::new();
    for r in crate::lake::state::current_files(rows) {
        out.entry(table_name(&r.source, &r.stream)).or_default().push(r);
    }
    out
}

fn ts(s: &Option<String>) -> Option<i64> {
    s.as_deref()
        .and_then(|v| crate::time::parse_instant(v, &chrono_tz::UTC))
        .map(|d| d.timestamp_micros())
}

fn meta_fields() -> Vec<Field> {
    let t = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    vec![
        Field::new("_partition", DataType::Utf8, true),
        Field::new("_window_start", t(), true),
        Field::new("_window_end", t(), true),
        Field::new("_file", DataType::Utf8, true),
        Field::new("_landed_at", t(), true),
        Field::new("_ingest_order", DataType::Int64, true),
    ]
}

async fn superseded(lake: &Lake, f: &LandedFile) -> Result<bool> {
    let rows = crate::lake::state::read_catalogue(lake, Some(&f.source)).await?;
    Ok(rows
        .iter()
        .any(|r| r.seq > f.seq && r.partition == f.partition && r.stream == f.stream && r.slot_key() == f.slot_key()))
}

/// The schema of a raw stream: the union of its current files' schemas recorded at pull time
/// (files landed before schemas were recorded are inferred from their content), plus `extra`
/// fields models name that no record has (they read as NULL).
pub async fn stream_schema(lake: &Lake, all: &[LandedFile], extra: &Schema) -> Result<Schema> {
    let mut s = Schema::empty();
    // Files of a stream mostly share one recorded schema: each distinct one is parsed once.
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for f in all {
        let one = match f.schema.as_deref() {
            Some(text) if !seen.insert(text) => continue,
            Some(text) => crate::lake::schema::from_json(text),
            None => None,
        };
        let one = match one {
            Some(x) => x,
            None => {
                let bytes = read(lake, f).await?;
                deltalake::arrow::json::reader::infer_json_schema(BufReader::new(Cursor::new(bytes)), None)?.0
            }
        };
        s = crate::lake::schema::union(&s, &one);
    }
    Ok(crate::lake::schema::union(&s, extra))
}

/// The schema a transform plans a raw stream with, from the distinct schemas its landings
/// recorded (`recorded`, from `state::Catalogue::stream_schemas`: current and superseded files alike, so
/// a field only a superseded file had reads as NULL) — no catalogue rows read. Files landed
/// before schemas were recorded (None) are looked up and inferred from their content.
pub async fn recorded_schema(
    lake: &Lake,
    cat: &crate::lake::state::Catalogue,
    source: &str,
    stream: &str,
    recorded: &[Option<&str>],
) -> Result<Schema> {
    let mut s = Schema::empty();
    let mut unrecorded = false;
    for r in recorded {
        match r.and_then(crate::lake::schema::from_json) {
            Some(one) => s = crate::lake::schema::union(&s, &one),
            None => unrecorded = true,
        }
    }
    if unrecorded {
        use crate::lake::state::{self, sql_text};
        let filter = format!("source = {} AND stream = {} AND schema IS NULL AND path IS NOT NULL", sql_text(source), sql_text(stream));
        let files = state::current_files(&cat.rows_where(&filter).await?);
        s = stream_schema(lake, &files, &s).await?;
    }
    Ok(s)
}

async fn read(lake: &Lake, f: &LandedFile) -> Result<bytes::Bytes> {
    let path = f.path.as_deref().unwrap_or_default();
    match lake.store.get(&lake.path(path)).await {
        Ok(g) => Ok(g.bytes().await?),
        // Superseded by a landing committed after this run read the catalogue (that one
        // has a later position, so the next run merges it): nothing to read here.
        Err(object_store::Error::NotFound { .. }) if superseded(lake, f).await? => {
            tracing::info!(file = %path, "skipping a raw file superseded while the transform ran");
            Ok(bytes::Bytes::new())
        }
        Err(e) => Err(Error::Lake(format!(
            "raw file {path} listed in the catalogue cannot be read: {e}"
        ))),
    }
}

/// The columns of a raw table: the stream's fields, then the per-file meta columns.
fn table_schema(data_schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = data_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(meta_fields());
    Arc::new(Schema::new(fields))
}

/// Decode one landed file into batches of `schema` (a projection of [`table_schema`]): only
/// the projected stream fields are built (arrow-json skips the others), the meta columns are
/// constants of the file except `_ingest_order` (landing position, then line).
async fn decode(lake: &Lake, f: &LandedFile, data: &SchemaRef, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let bytes = read(lake, f).await?;
    let reader = deltalake::arrow::json::ReaderBuilder::new(data.clone())
        .with_coerce_primitive(true)
        .with_batch_size(16 * 1024)
        .build(Cursor::new(bytes))?;
    let mut out = Vec::new();
    let mut line: i64 = 0;
    for b in reader {
        let b = b.map_err(|e| Error::Other(format!("raw file {}: {e}", f.path.as_deref().unwrap_or_default())))?;
        let n = b.num_rows();
        let tsa = |v: Option<i64>| Arc::new(TimestampMicrosecondArray::from(vec![v; n]).with_timezone("UTC")) as ArrayRef;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            cols.push(match field.name().as_str() {
                "_partition" => Arc::new(StringArray::from(vec![Some(f.partition.as_str()); n])),
                "_window_start" => tsa(ts(&f.window_start)),
                "_window_end" => tsa(ts(&f.window_end)),
                "_file" => Arc::new(StringArray::from(vec![f.path.as_deref(); n])),
                "_landed_at" => tsa(ts(&Some(f.landed_at.clone()))),
                "_ingest_order" => Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| crate::lake::state::ingest_order(f.seq, line + i)))),
                name => b
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| Error::Other(format!("raw table: no column {name}")))?,
            });
        }
        line += n as i64;
        if line > crate::lake::state::LINES_PER_FILE {
            return Err(Error::Other(format!(
                "raw file {} holds more than {} records: their _ingest_order would not be unique (pull the stream in windows)",
                f.path.as_deref().unwrap_or_default(),
                crate::lake::state::LINES_PER_FILE
            )));
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(n));
        out.push(RecordBatch::try_new_with_options(schema.clone(), cols, &opts)?);
    }
    Ok(out)
}

/// A raw stream as a table DataFusion scans file by file: nothing is read until the plan
/// runs, each core decodes one file at a time (its bytes dropped once decoded), and only the
/// columns the query uses are built. Memory is bounded by what the plan above holds (sorts
/// and aggregations are tracked by the session's memory pool and spill).
#[derive(Debug)]
pub struct RawTable {
    lake: Lake,
    files: Arc<Vec<LandedFile>>,
    data: SchemaRef,
    schema: SchemaRef,
}

impl RawTable {
    pub fn new(lake: &Lake, files: &[LandedFile], data: SchemaRef) -> Self {
        Self { lake: lake.clone(), files: Arc::new(files.to_vec()), schema: table_schema(&data), data }
    }
}

#[async_trait::async_trait]
impl TableProvider for RawTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let mut wanted: Vec<Field> = self
            .data
            .fields()
            .iter()
            .filter(|f| schema.field_with_name(f.name()).is_ok())
            .map(|f| f.as_ref().clone())
            .collect();
        // arrow-json needs a field to count rows by: `count(*)` still gets its lines.
        if wanted.is_empty() {
            wanted.extend(self.data.fields().iter().take(1).map(|f| f.as_ref().clone()));
        }
        let parts = state.config().target_partitions().clamp(1, self.files.len().max(1));
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(parts),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(RawExec {
            lake: self.lake.clone(),
            files: self.files.clone(),
            data: Arc::new(Schema::new(wanted)),
            schema,
            parts,
            props: Arc::new(props),
        }))
    }
}

/// The scan of a [`RawTable`]: partition `i` of `n` decodes files `i, i + n, …`.
#[derive(Debug)]
struct RawExec {
    lake: Lake,
    files: Arc<Vec<LandedFile>>,
    data: SchemaRef,
    schema: SchemaRef,
    parts: usize,
    props: Arc<PlanProperties>,
}

impl DisplayAs for RawExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "RawExec: {} files in {} partitions", self.files.len(), self.parts)
    }
}

impl ExecutionPlan for RawExec {
    fn name(&self) -> &str {
        "RawExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn execute(&self, partition: usize, _ctx: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let mine: Vec<LandedFile> = self.files.iter().skip(partition).step_by(self.parts).cloned().collect();
        let (lake, data, schema) = (self.lake.clone(), self.data.clone(), self.schema.clone());
        let stream = futures::stream::iter(mine)
            .then(move |f| {
                let (lake, data, schema) = (lake.clone(), data.clone(), schema.clone());
                async move { decode(&lake, &f, &data, &schema).await }
            })
            .map_ok(|bs| futures::stream::iter(bs.into_iter().map(Ok)))
            .try_flatten()
            .map_err(|e: Error| DataFusionError::External(Box::new(e)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}

/// Register raw stream `name` holding `files` (none: empty, for planning), with the stream's
/// schema (`base`, computed once per run) plus `extra` fields.
pub fn register(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
    files: &[LandedFile],
    base: &Schema,
    extra: &Schema,
) -> Result<()> {
    let data_schema = Arc::new(crate::lake::schema::union(base, extra));
    super::register(ctx, name, Arc::new(RawTable::new(lake, files, data_schema)))
}
