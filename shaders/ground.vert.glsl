#version 150
// The ground plane; the grid is drawn in the fragment shader from world coordinates.
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelMatrix;
in vec4 p3d_Vertex;
out vec2 v_world;

void main() {
    v_world = (p3d_ModelMatrix * p3d_Vertex).xy;
    gl_Position = p3d_ModelViewProjectionMatrix * p3d_Vertex;
}
