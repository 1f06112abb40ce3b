export * from './discovery.js';
export * from './keys.js';
export * from './mint.js';
export * from './subject.js';
