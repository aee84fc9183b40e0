// A DDL scenario through @zilliz/milvus2-sdk-node's REST client (HttpClient), used as a
// Milvus user would, unpatched, against a mast server.
//
//   node scenario.js http://127.0.0.1:PORT      (MILVUS_SDK_DIR: where `npm ci` installed it)
//
// Prints every step and what came back; exits 1 at the first reply that differs from what
// Milvus answers.
'use strict';
const path = require('path');

const sdkDir = process.env.MILVUS_SDK_DIR || __dirname;
const { HttpClient } = require(path.join(sdkDir, 'node_modules', '@zilliz', 'milvus2-sdk-node'));

const endpoint = process.argv[2];
if (!endpoint) {
  console.error('usage: node scenario.js http://HOST:PORT');
  process.exit(2);
}
const client = new HttpClient({ endpoint, timeout: 20000 });

let steps = 0;
function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}
function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}
// Runs one call, prints it, checks the code, returns the reply.
async function step(name, call, code = 0) {
  steps += 1;
  let res;
  try {
    res = await call();
  } catch (e) {
    fail(`${name}: threw ${e && e.message}`);
  }
  console.log(`${String(steps).padStart(2)} ${name} -> ${JSON.stringify(res)}`);
  if (!res || res.code !== code) fail(`${name}: expected code ${code}`);
  if (code !== 0 && (typeof res.message !== 'string' || res.message === '')) {
    fail(`${name}: an error must carry a message`);
  }
  return res;
}
function check(cond, what) {
  if (!cond) fail(what);
}

async function main() {
  // Databases.
  await step('createDatabase sdk_db', () => client.createDatabase({ dbName: 'sdk_db' }));
  await step('createDatabase sdk_db again (exists)', () => client.createDatabase({ dbName: 'sdk_db' }), 1100);
  let r = await step('listDatabases', () => client.listDatabases());
  check(r.data.includes('default') && r.data.includes('sdk_db'), 'listDatabases names both');
  r = await step('describeDatabase default', () => client.describeDatabase({ dbName: 'default' }));
  check(r.data.dbID === 1 && r.data.dbName === 'default', 'default database has ID 1');
  await step('dropDatabase default (refused)', () => client.dropDatabase({ dbName: 'default' }), 1100);
  await step('createDatabase 1bad (bad name)', () => client.createDatabase({ dbName: '1bad' }), 802);

  // Quick create.
  await step('createCollection quick', () =>
    client.createCollection({ dbName: 'sdk_db', collectionName: 'quick', dimension: 8 }));
  await step('createCollection quick again (same parameters)', () =>
    client.createCollection({ dbName: 'sdk_db', collectionName: 'quick', dimension: 8 }));
  await step('createCollection quick, other dimension', () =>
    client.createCollection({ dbName: 'sdk_db', collectionName: 'quick', dimension: 16 }), 1100);
  await step('createCollection without dimension', () =>
    client.createCollection({ dbName: 'sdk_db', collectionName: 'nodim' }), 1100);
  r = await step('describeCollection quick', () =>
    client.describeCollection({ dbName: 'sdk_db', collectionName: 'quick' }));
  const d = r.data;
  check(d.collectionID > 0, 'collectionID');
  check(same(d.fields.map((f) => [f.name, f.id, f.type, f.primaryKey]),
    [['id', 100, 'Int64', true], ['vector', 101, 'FloatVector', false]]), 'quick-create fields');
  check(same(d.fields[1].params, [{ key: 'dim', value: '8' }]), 'vector dim param');
  check(d.load === 'LoadStateLoaded', 'quick create loads');
  check(d.indexes.length === 1 && d.indexes[0].metricType === 'COSINE', 'quick create indexes');
  check(d.enableDynamicField === true && d.partitionsNum === 1, 'dynamic fields, one partition');

  // Full schema with an index.
  const schema = {
    autoID: false,
    enableDynamicField: false,
    fields: [
      { fieldName: 'pk', dataType: 'VarChar', isPrimary: true, elementTypeParams: { max_length: 64 } },
      { fieldName: 'emb', dataType: 'FloatVector', elementTypeParams: { dim: 16 } },
      { fieldName: 'tags', dataType: 'Array', elementDataType: 'Int64', elementTypeParams: { max_capacity: 8 } },
      { fieldName: 'doc', dataType: 'JSON', nullable: true },
    ],
  };
  await step('createCollection full schema', () => client.createCollection({
    dbName: 'sdk_db', collectionName: 'full', schema,
    indexParams: [{ fieldName: 'emb', indexName: 'emb_idx', metricType: 'L2', indexType: 'HNSW', params: { M: 16, efConstruction: 64 } }],
  }));
  r = await step('describeCollection full', () => client.describeCollection({ dbName: 'sdk_db', collectionName: 'full' }));
  check(same(r.data.fields.map((f) => f.id), [100, 101, 102, 103]), 'field IDs from 100');
  check(r.data.fields[2].elementType === 'Int64', 'array element type');
  await step('createCollection VARCHAR (type names are case-sensitive)', () => client.createCollection({
    dbName: 'sdk_db', collectionName: 'bad',
    schema: { fields: [{ fieldName: 'pk', dataType: 'VARCHAR', isPrimary: true }] },
  }), 1100);
  r = await step('listCollections', () => client.listCollections({ dbName: 'sdk_db' }));
  check(same(r.data, ['full', 'quick']), 'both collections listed');
  r = await step('hasCollection quick', () => client.hasCollection({ dbName: 'sdk_db', collectionName: 'quick' }));
  check(r.data.has === true, 'has quick');
  r = await step('hasCollection nope', () => client.hasCollection({ dbName: 'sdk_db', collectionName: 'nope' }));
  check(r.data.has === false, 'has nope is false');
  await step('describeCollection nope', () => client.describeCollection({ dbName: 'sdk_db', collectionName: 'nope' }), 100);
  r = await step('getCollectionStatistics', () => client.getCollectionStatistics({ dbName: 'sdk_db', collectionName: 'full' }));
  check(r.data.rowCount === 0, 'rowCount 0');

  // Partitions.
  await step('createPartition p1', () => client.createPartition({ dbName: 'sdk_db', collectionName: 'full', partitionName: 'p1' }));
  r = await step('listPartitions', () => client.listPartitions({ dbName: 'sdk_db', collectionName: 'full' }));
  check(same(r.data, ['_default', 'p1']), 'partitions listed');
  r = await step('hasPartition p1', () => client.hasPartition({ dbName: 'sdk_db', collectionName: 'full', partitionName: 'p1' }));
  check(r.data.has === true, 'has p1');
  await step('dropPartition _default (refused)', () => client.dropPartition({ dbName: 'sdk_db', collectionName: 'full', partitionName: '_default' }), 1100);
  await step('releaseCollection full', () => client.releaseCollection({ dbName: 'sdk_db', collectionName: 'full' }));
  r = await step('getCollectionLoadState full', () => client.getCollectionLoadState({ dbName: 'sdk_db', collectionName: 'full' }));
  check(r.data.loadState === 'LoadStateNotLoad', 'released');
  await step('loadPartitions p1', () => client.loadPartitions({ dbName: 'sdk_db', collectionName: 'full', partitionNames: ['p1'] }));
  await step('releasePartitions p1', () => client.releasePartitions({ dbName: 'sdk_db', collectionName: 'full', partitionNames: ['p1'] }));
  await step('dropPartition p1', () => client.dropPartition({ dbName: 'sdk_db', collectionName: 'full', partitionName: 'p1' }));

  // Indexes.
  r = await step('listIndexes full', () => client.listIndexes({ dbName: 'sdk_db', collectionName: 'full' }));
  check(same(r.data, ['emb_idx']), 'index listed');
  r = await step('describeIndex emb_idx', () => client.describeIndex({ dbName: 'sdk_db', collectionName: 'full', indexName: 'emb_idx' }));
  check(r.data[0].indexType === 'HNSW' && r.data[0].metricType === 'L2', 'index described');
  await step('dropIndex emb_idx', () => client.dropIndex({ dbName: 'sdk_db', collectionName: 'full', indexName: 'emb_idx' }));
  await step('describeIndex emb_idx (dropped)', () => client.describeIndex({ dbName: 'sdk_db', collectionName: 'full', indexName: 'emb_idx' }), 700);
  await step('createIndex emb', () => client.createIndex({
    dbName: 'sdk_db', collectionName: 'full',
    indexParams: [{ fieldName: 'emb', indexName: 'emb_ivf', metricType: 'IP', params: { index_type: 'IVF_FLAT', nlist: 32 } }],
  }));
  await step('loadCollection full', () => client.loadCollection({ dbName: 'sdk_db', collectionName: 'full' }));
  r = await step('getCollectionLoadState full', () => client.getCollectionLoadState({ dbName: 'sdk_db', collectionName: 'full' }));
  check(r.data.loadState === 'LoadStateLoaded', 'loaded');

  // Aliases.
  await step('createAlias al -> full', () => client.createAlias({ dbName: 'sdk_db', collectionName: 'full', aliasName: 'al' }));
  await step('createAlias al -> quick (exists)', () => client.createAlias({ dbName: 'sdk_db', collectionName: 'quick', aliasName: 'al' }), 1602);
  await step('createAlias quick (a collection name)', () => client.createAlias({ dbName: 'sdk_db', collectionName: 'full', aliasName: 'quick' }), 1601);
  r = await step('describeAlias al', () => client.describeAlias({ dbName: 'sdk_db', aliasName: 'al' }));
  check(r.data.collectionName === 'full', 'alias target');
  await step('alterAlias al -> quick', () => client.alterAlias({ dbName: 'sdk_db', collectionName: 'quick', aliasName: 'al' }));
  r = await step('listAliases', () => client.listAliases({ dbName: 'sdk_db' }));
  check(same(r.data, ['al']), 'alias listed');
  await step('dropAlias al', () => client.dropAlias({ dbName: 'sdk_db', aliasName: 'al' }));
  await step('describeAlias al (dropped)', () => client.describeAlias({ dbName: 'sdk_db', aliasName: 'al' }), 1600);

  // Fields: add a nullable scalar, change its max_length.
  await step('addCollectionField note', () => client.addCollectionField({
    dbName: 'sdk_db', collectionName: 'full',
    schema: { fieldName: 'note', dataType: 'VarChar', nullable: true, elementTypeParams: { max_length: 32 } },
  }));
  await step('addCollectionField not nullable (refused)', () => client.addCollectionField({
    dbName: 'sdk_db', collectionName: 'full', schema: { fieldName: 'n2', dataType: 'Int32' },
  }), 1100);
  await step('alterCollectionFieldProperties note max_length', () => client.alterCollectionFieldProperties({
    dbName: 'sdk_db', collectionName: 'full', fieldName: 'note', fieldParams: { max_length: 64 },
  }));
  r = await step('describeCollection full (with note)', () => client.describeCollection({ dbName: 'sdk_db', collectionName: 'full' }));
  const note = r.data.fields.find((f) => f.name === 'note');
  check(note && note.nullable === true && same(note.params, [{ key: 'max_length', value: '64' }]), 'added field described');

  // Rename, drop.
  await step('renameCollection quick -> quick2', () =>
    client.renameCollection({ dbName: 'sdk_db', collectionName: 'quick', newCollectionName: 'quick2' }));
  await step('dropDatabase sdk_db (not empty)', () => client.dropDatabase({ dbName: 'sdk_db' }), 1100);
  await step('dropCollection quick2', () => client.dropCollection({ dbName: 'sdk_db', collectionName: 'quick2' }));
  await step('dropCollection full', () => client.dropCollection({ dbName: 'sdk_db', collectionName: 'full' }));
  await step('dropCollection full again (idempotent)', () => client.dropCollection({ dbName: 'sdk_db', collectionName: 'full' }));
  await step('dropDatabase sdk_db', () => client.dropDatabase({ dbName: 'sdk_db' }));
  r = await step('listDatabases', () => client.listDatabases());
  check(!r.data.includes('sdk_db'), 'sdk_db dropped');
  console.log(`scenario passed: ${steps} steps`);
}

main().catch((e) => fail(`unexpected: ${e && e.stack}`));
